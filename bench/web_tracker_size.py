"""Size of the page tracker (inkloop_gateway/static/hm.js, built from web/tracker/hm.js): raw and gzipped;
the goal is <= 1 KB gzipped. `--check` (run by `./dev check`) exits 1 when the goal is not met.
Run: .venv/bin/python bench/web_tracker_size.py [--check]
"""

from __future__ import annotations

import gzip
import sys
from importlib import resources

GOAL_BYTES = 1024


def main() -> None:
    script = resources.files("inkloop_gateway").joinpath("static/hm.js").read_bytes()
    gzipped = len(gzip.compress(script, compresslevel=9, mtime=0))
    verdict = "within" if gzipped <= GOAL_BYTES else "OVER"
    print(f"hm.js: {len(script)} bytes raw, {gzipped} bytes gzipped ({verdict} the {GOAL_BYTES}-byte goal)")
    if "--check" in sys.argv[1:] and gzipped > GOAL_BYTES:
        sys.exit(1)


if __name__ == "__main__":
    main()
