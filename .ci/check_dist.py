"""CI: build the sdist and the wheel the way a release would, outside the repository, and check them.

    bash .ci/venv python .ci/check_dist.py

The source tree is copied to a temporary directory first (the build writes ``*.egg-info`` and
``build/`` next to its sources); ``python -m build`` makes the sdist and then the wheel from the
unpacked sdist, so a file the sdist misses breaks the wheel too. Then ``twine check --strict``
(the metadata, and the README renders on a package index), the wheel holds the package with its
``py.typed`` marker and no tests or benchmarks, and the sdist holds the files a packager or a
citing user needs (LICENSE, README, CHANGELOG, CITATION.cff).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Not sources: the environment, caches and earlier build outputs.
SKIP = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "runs")
SDIST_FILES = {"LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "pyproject.toml", "mimetic_jax/py.typed"}


def _run(what: str, *cmd: str) -> None:
    """Run ``cmd``; its output is shown only when it fails."""
    start = time.perf_counter()
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if run.returncode:
        print(run.stdout, file=sys.stderr)
        raise SystemExit(f"check_dist: {what} failed (exit {run.returncode})")
    print(f"check_dist: {what}: {time.perf_counter() - start:.1f} s", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mimetic_jax-dist-") as tmp:
        src, out = pathlib.Path(tmp) / "src", pathlib.Path(tmp) / "dist"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*SKIP))
        _run("python -m build (sdist, then the wheel from it)", sys.executable, "-m", "build", "-o", str(out), str(src))
        sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
        if len(sdists) != 1 or len(wheels) != 1:
            raise SystemExit(
                f"check_dist: expected one sdist and one wheel, got {sorted(p.name for p in out.iterdir())}"
            )
        _run("twine check --strict", sys.executable, "-m", "twine", "check", "--strict", str(sdists[0]), str(wheels[0]))

        problems = []
        wheel = zipfile.ZipFile(wheels[0]).namelist()
        if "mimetic_jax/py.typed" not in wheel:
            problems.append("the wheel has no mimetic_jax/py.typed")
        tops = {n.split("/")[0] for n in wheel}
        stray = sorted(t for t in tops if t != "mimetic_jax" and not t.endswith(".dist-info"))
        if stray:
            problems.append(f"the wheel holds more than the package: {stray}")
        for name in wheel:
            parts = name.split("/")
            if {"tests", "benchmarks", "notebooks"} & set(parts[:-1]) or parts[-1].startswith(("test_", "conftest")):
                problems.append(f"the wheel holds a test or benchmark file: {name}")

        with tarfile.open(sdists[0]) as tar:
            names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        missing = sorted(SDIST_FILES - names)
        if missing:
            problems.append(f"the sdist misses {missing}")

        for p in problems:
            print(f"check_dist: {p}", file=sys.stderr)
        if problems:
            return 1
        print(f"check_dist: {sdists[0].name} ({len(names)} files) and {wheels[0].name} ({len(wheel)} files) pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
