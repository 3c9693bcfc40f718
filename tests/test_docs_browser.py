"""The built documentation site as a reader sees it: headless Chromium, JavaScript on, no network.

Run by ``.ci/run`` after the Sphinx build (``docs/_build/html``), and by hand::

    python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html
    python -m pytest -q -p no:cacheprovider -m browser tests/test_docs_browser.py

The default ``pytest`` run skips these tests (marker ``browser``). The browser is Debian's
``chromium`` (``/usr/bin/chromium``, or ``$CHROMIUM``; ``.ci/run`` installs it), driven by
Python playwright (the ``test`` extra; playwright's own browser download is never used). The
site is served from ``127.0.0.1``; every request to another host is aborted and counted as a
failure, as on a machine with no network.

Every top-level page of ``docs/`` (the landing page, getting started, the scheme pages, the
guides) and every notebook page is opened at a 1280 x 800 viewport and must show:

* **math rendered**: after MathJax's first typeset, no raw TeX delimiter (``\\(``, ``\\)``,
  ``\\[``, ``\\]``, ``$$``) in the page's visible text outside code blocks, and no MathJax
  error box (``mjx-merror``);
* **images loaded**: every ``<img>`` decoded, with ``naturalWidth > 0``;
* **no JavaScript error**: no uncaught exception (``pageerror``), no ``console.error``
  (a failed resource load logs one too);
* **no code block cut**: a code block is *cut* when some of its text is hidden behind a
  horizontal scroll bar at this width, i.e. a visible ``<pre>`` whose ``scrollWidth`` exceeds
  its ``clientWidth`` by more than 1 px (rounding of sub-pixel widths). Cells and outputs of
  the notebooks wrap their long lines instead (``docs/_static/custom.css``), so they are
  never cut; a block on the other pages must fit as written.

Screenshots of the landing page, one scheme page (attention) and the quickstart notebook go to
``docs/_build/screenshots/`` for review.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import re
import shutil
import threading
import urllib.parse

import pytest

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
SCREENSHOTS = DOCS / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: The launch flags: headless, no sandbox (CI runs as root), nothing that reaches the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
#: page -> screenshot file name.
SCREENSHOT_PAGES = {
    "index.html": "landing.png",
    "attention.html": "attention.png",
    "_generated/notebooks/quickstart.html": "quickstart.png",
}
DELIMITERS = ("\\(", "\\)", "\\[", "\\]", "$$")
#: Milliseconds to wait for a page, for MathJax's first typeset and for the images.
TIMEOUT_MS = 60_000


def pages() -> list[str]:
    """The pages to open, relative to the site: every top-level page of docs/ and every notebook page."""
    top = sorted(p.stem for p in DOCS.glob("*.md")) + sorted(p.stem for p in DOCS.glob("*.rst"))
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    return [f"{name}.html" for name in top] + [f"_generated/notebooks/{name}.html" for name in notebooks]


def test_the_page_list_holds_the_landing_page_every_scheme_page_and_every_notebook():
    listed = pages()
    for name in ("index", "attention", "conv_mlp", "ssm", "emergence", "fuse", "getting_started"):
        assert f"{name}.html" in listed
    assert "_generated/notebooks/quickstart.html" in listed and len([p for p in listed if "notebooks/" in p]) == 6


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site():
    """The built site served on 127.0.0.1 (a free port) for the module's tests; its base URL."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site in {SITE}: run python -m sphinx -W --keep-going -n -q -b html docs {SITE}")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with an empty profile and the flags of :data:`FLAGS`."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS, viewport=VIEWPORT
        )
        try:
            yield context
        finally:
            context.close()


#: Runs in the page after load: waits for MathJax's first typeset and for every image, then
#: returns what the checks need.
INSPECT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await Promise.all([...document.images].map(img => {
    img.loading = 'eager';
    return img.decode().catch(() => null);
  }));
  const hidden = el => el.closest('pre, code, script, style, noscript, mjx-container, .MathJax, textarea');
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const texts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || hidden(el) || el.getClientRects().length === 0) continue;
    texts.push(node.textContent);
  }
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const items = window.MathJax && MathJax.startup && MathJax.startup.document ? [...MathJax.startup.document.math] : [];
  return {
    text: texts.join(' '),
    mathjax: !!(window.MathJax && MathJax.startup),
    math: document.querySelectorAll('mjx-container').length,
    merrors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
    images: [...document.images].map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    wide_math: [...document.querySelectorAll('mjx-container[display="true"]')].filter(visible).map(c => {
      const item = items.find(m => m.typesetRoot === c);
      const math = c.querySelector('mjx-math');
      return {width: math ? math.getBoundingClientRect().width : 0, box: c.getBoundingClientRect().width,
              tex: item ? item.math : ''};
    }).filter(m => m.width > m.box + 1),
    pres: [...document.querySelectorAll('pre')].filter(visible).map(pre => ({
      scroll: pre.scrollWidth, client: pre.clientWidth,
      line: pre.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), ''),
    })),
  };
}"""


def open_page(context, site: str, page: str) -> tuple[dict, list[str]]:
    """Load ``page``; what :data:`INSPECT` returns and the errors (JavaScript, console, off-site requests)."""
    errors: list[str] = []
    tab = context.new_page()
    host = urllib.parse.urlparse(site).netloc

    def route(r):
        url = urllib.parse.urlparse(r.request.url)
        if url.scheme in ("http", "https") and url.netloc != host:
            errors.append(f"request off the site (no network): {r.request.url}")
            return r.abort()
        return r.continue_()

    tab.route("**/*", route)
    tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    tab.on("console", lambda msg: errors.append(f"console.error: {msg.text}") if msg.type == "error" else None)
    try:
        response = tab.goto(site + page, wait_until="load", timeout=TIMEOUT_MS)
        assert response is not None and response.ok, f"{page}: HTTP {response and response.status}"
        tab.set_default_timeout(TIMEOUT_MS)
        found = tab.evaluate(INSPECT)
        if page in SCREENSHOT_PAGES:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SCREENSHOTS / SCREENSHOT_PAGES[page]), full_page=True)
    finally:
        tab.close()
    return found, errors


@pytest.fixture(scope="module")
def screenshots_cleared():
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)


@pytest.mark.parametrize("page", pages())
def test_the_page_reads_as_intended_with_no_network(page, site, browser, screenshots_cleared):
    found, errors = open_page(browser, site, page)
    problems = list(errors)
    raw = [d for d in DELIMITERS if d in found["text"]]
    if raw:
        where = found["text"].find(raw[0])
        problems.append(f"raw TeX {raw} in the visible text: ...{found['text'][max(0, where - 60) : where + 60]!r}...")
    if found["merrors"]:
        problems.append(f"MathJax errors: {found['merrors']}")
    problems += [f"image not loaded: {img['src']}" for img in found["images"] if not img["ok"]]
    problems += [
        f"code block cut ({pre['scroll']} px of text in {pre['client']} px): {pre['line'][:100]!r}"
        for pre in found["pres"]
        if pre["scroll"] > pre["client"] + 1
    ]
    problems += [
        f"displayed formula cut ({m['width']:.0f} px wide in {m['box']:.0f} px): {m['tex'][:100]!r}"
        for m in found["wide_math"]
    ]
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)
    if has_math(page):
        assert found["mathjax"] and found["math"] > 0, f"{page}: has TeX in its source but MathJax typeset nothing"


def has_math(page: str) -> bool:
    """Whether the source of ``page`` holds ``$...$`` math."""
    stem = pathlib.Path(page).stem
    source = ROOT / "notebooks" / f"{stem}.md" if page.startswith("_generated/notebooks/") else DOCS / f"{stem}.md"
    return source.is_file() and re.search(r"\$[^$\n]+\$", source.read_text(encoding="utf-8")) is not None
