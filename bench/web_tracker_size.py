"""Size of the page tracker (inkloop_gateway/static/hm.js): raw and gzipped; the goal is <= 1 KB gzipped.
Run: .venv/bin/python bench/web_tracker_size.py
"""

from __future__ import annotations

import gzip
from importlib import resources

GOAL_BYTES = 1024


def main() -> None:
    script = resources.files("inkloop_gateway").joinpath("static/hm.js").read_bytes()
    gzipped = len(gzip.compress(script, compresslevel=9, mtime=0))
    verdict = "within" if gzipped <= GOAL_BYTES else "OVER"
    print(f"hm.js: {len(script)} bytes raw, {gzipped} bytes gzipped ({verdict} the {GOAL_BYTES}-byte goal)")


if __name__ == "__main__":
    main()
