"""``python -m mimetic_jax``: the ``mimetic-jax`` command line (see :mod:`mimetic_jax.experiments.cli`)."""

from __future__ import annotations

import sys

from mimetic_jax.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
