"""Open the page → first image shown, in headless Chromium against a fresh `inkloop up`.

What a new user waits for after `./dev up`: the page loads (its key and the model's choices come
from the gateway), they type a prompt and press Generate with the page's defaults, and the image
appears. Timed from navigation start to the <img> having decoded pixels; the first run is the
user's first image, the later ones show the steady state.

    .venv/bin/python bench/web_first_image.py [--runs 3] [--model tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
INKLOOP = str(Path(sys.executable).parent / "inkloop")


def _free_port_block(count: int) -> int:
    """A base port with `count` free ports from it (the metrics ports are base, base+1, base+2)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count < 65535 and all(_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_system(data_dir: Path, model: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    base = _free_port_block(8)
    log = data_dir / "up.log"
    process = subprocess.Popen(
        [
            INKLOOP,
            "up",
            "--data-dir",
            str(data_dir / "var"),
            "--gateway-port",
            str(base),
            "--inference-port",
            str(base + 1),
            "--analytics-port",
            str(base + 2),
            "--http-port",
            str(base + 3),
            "--metrics-port-base",
            str(base + 4),
            "--model",
            model,
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    deadline = time.monotonic() + 600
    while "Ctrl-C stops everything" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"inkloop up did not come up:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process, base + 3, log


async def first_image_seconds(
    browser: object, url: str, prompt: str, screenshot: Path | None = None
) -> tuple[float, str]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    started = time.perf_counter()
    await page.goto(url)
    await page.wait_for_function(
        "!document.getElementById('generate').disabled && document.getElementById('size').value"
    )
    await page.fill("#prompt", prompt)
    await page.click("#generate")
    await page.wait_for_function(
        "(() => { const i = document.getElementById('image'); return i.src && i.complete && i.naturalWidth > 0; })()",
        timeout=600_000,
    )
    elapsed = time.perf_counter() - started
    size = await page.evaluate("document.getElementById('size').value")
    if screenshot is not None:
        await page.screenshot(path=screenshot, full_page=True)
    await context.close()
    return elapsed, size


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="tiny", choices=["tiny", "demo"])
    parser.add_argument("--screenshot", type=Path, help="PNG of the page after the first image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-first-image-") as tmp:
        process, http_port, _log = await asyncio.to_thread(start_system, Path(tmp), args.model)
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                times = []
                for run in range(args.runs):
                    seconds, size = await first_image_seconds(
                        browser,
                        f"http://127.0.0.1:{http_port}/",
                        f"一只红狐狸 a red fox, run {run}",
                        args.screenshot if run == 0 else None,
                    )
                    times.append(seconds)
                    print(f"run {run + 1}: {seconds:.2f} s from opening the page to the image shown ({size})")
                await browser.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(
        f"open page → first image shown ({args.model} model, page defaults): first {times[0]:.2f} s, "
        f"median of {len(times)} {statistics.median(times):.2f} s (goal ≤ 10 s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
