"""`inkloop generate | inpaint | outpaint | edit`: generate through the gateway (`inkloop.client`), show
progress, write the image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from inkloop.client import (
    Client,
    Generation,
    InkloopClientError,
    JobCancelledError,
    JobFailedError,
    OnProgress,
    OnQueued,
    Retry,
)
from inkloop_cli.client import ClientSettings, console

_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

_OUTPUT = typer.Option(..., "-o", "--output", help="Image file to write (.png, .jpg or .webp).")
_SEED = typer.Option(None, help="Seed; omitted = the server picks one and prints it.")
_STEPS = typer.Option(0, help="Denoising steps (0 = model default).")
_WIDTH = typer.Option(0, help="Width in pixels, multiple of 16 (0 = model default).")
_HEIGHT = typer.Option(0, help="Height in pixels, multiple of 16 (0 = model default).")
_NEGATIVE = typer.Option("", "--negative", help="Negative prompt.")
_CFG = typer.Option(None, "--cfg", help="True CFG scale (omitted = model default).")

#: Runs one generation with the client, reporting progress and queue position through the callbacks.
Generating = Callable[[Client, OnProgress, OnQueued], Generation]


def output_format(output: Path) -> str:
    """The image format named by the output file's extension; exits 2 on any other extension."""
    image_format = _FORMATS.get(output.suffix.lower())
    if image_format is None:
        console.print(f"[red]error: --output must end in one of {', '.join(_FORMATS)}[/]")
        raise typer.Exit(2)
    return image_format


def open_client() -> Client:
    """A client of the gateway the INKLOOP_* settings name, saying on the console when it retries."""
    settings = ClientSettings()
    return Client(settings.gateway, api_key=settings.resolved_api_key(), on_retry=_say_retry)


def _say_retry(retry: Retry) -> None:
    console.print(f"[yellow]{retry.code}: trying again in {retry.delay_s:.1f} s (try {retry.attempt + 1})[/]")


def fail(error: InkloopClientError) -> typer.Exit:
    """Prints a failed call's status, the fields at fault and the retry delay; returns the exit to raise."""
    console.print(f"[red]error: {error.code}: {error.message}[/]")
    for field, description in error.field_violations:
        console.print(f"  field [bold]{field}[/]: {description}")
    if error.retry_delay_s is not None:
        console.print(f"  retry after {error.retry_delay_s:.1f} s")
    return typer.Exit(1)


def generating(run: Generating) -> Generation:
    """Runs `run` behind a progress bar; a failed, cancelled or refused generation exits 1."""
    with (
        open_client() as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task("queued", total=None)

        def on_queued(position: int, _reason: str) -> None:
            progress.update(bar, description=f"queued (position {position})")

        def on_progress(step: int, total_steps: int) -> None:
            progress.update(bar, description="denoising", completed=step, total=total_steps)

        try:
            result = run(client, on_progress, on_queued)
        except JobFailedError as error:
            progress.stop()
            failure = error.failure
            field = f" (field {failure.field})" if failure.field else ""
            console.print(f"[red]error: {failure.code}: {failure.message}{field}[/]")
            raise typer.Exit(1) from None
        except JobCancelledError:
            progress.stop()
            console.print("[yellow]cancelled[/]")
            raise typer.Exit(1) from None
        except InkloopClientError as error:
            progress.stop()
            raise fail(error) from None
        progress.update(bar, description="done")
    return result


def _write(result: Generation, output: Path) -> None:
    image = result.image.save(output)
    console.print(
        f"wrote {image} ({result.image.width}×{result.image.height}, seed {result.seed}, job {result.job_id})"
    )


def generate(
    prompt: str = typer.Argument(..., help="What to draw (Chinese, English or mixed)."),
    output: Path = _OUTPUT,
    seed: int | None = _SEED,
    steps: int = _STEPS,
    width: int = _WIDTH,
    height: int = _HEIGHT,
    negative: str = _NEGATIVE,
    cfg: float | None = _CFG,
    template: str = typer.Option("", "--template", help="Id of the template the prompt was made from."),
) -> None:
    """Generate an image from a prompt."""
    image_format = output_format(output)
    result = generating(
        lambda client, on_progress, on_queued: client.generate(
            prompt,
            negative_prompt=negative,
            width=width,
            height=height,
            steps=steps,
            true_cfg_scale=cfg,
            seed=seed,
            output_format=image_format,
            template_id=template,
            on_progress=on_progress,
            on_queued=on_queued,
        )
    )
    _write(result, output)


def inpaint(
    prompt: str = typer.Argument(..., help="What to paint in the masked area."),
    image: Path = typer.Option(..., "--image", exists=True, help="Source image."),
    mask: Path = typer.Option(..., "--mask", exists=True, help="Mask of the source's size; white repaints."),
    feather: int = typer.Option(0, help="Soft edge around the mask, in pixels."),
    output: Path = _OUTPUT,
    seed: int | None = _SEED,
    steps: int = _STEPS,
    negative: str = _NEGATIVE,
    cfg: float | None = _CFG,
) -> None:
    """Repaint the white part of a mask; the rest of the image is kept exactly."""
    image_format = output_format(output)
    result = generating(
        lambda client, on_progress, on_queued: client.inpaint(
            prompt,
            image=image,
            mask=mask,
            feather_px=feather,
            negative_prompt=negative,
            steps=steps,
            true_cfg_scale=cfg,
            seed=seed,
            output_format=image_format,
            on_progress=on_progress,
            on_queued=on_queued,
        )
    )
    _write(result, output)


def outpaint(
    prompt: str = typer.Argument(..., help="What to paint in the new border."),
    image: Path = typer.Option(..., "--image", exists=True, help="Source image."),
    left: int = typer.Option(0, help="Pixels to add on the left."),
    top: int = typer.Option(0, help="Pixels to add at the top."),
    right: int = typer.Option(0, help="Pixels to add on the right."),
    bottom: int = typer.Option(0, help="Pixels to add at the bottom."),
    feather: int = typer.Option(0, help="Soft seam, in pixels."),
    output: Path = _OUTPUT,
    seed: int | None = _SEED,
    steps: int = _STEPS,
    negative: str = _NEGATIVE,
    cfg: float | None = _CFG,
) -> None:
    """Extend the canvas on any side; the original pixels are kept exactly."""
    image_format = output_format(output)
    result = generating(
        lambda client, on_progress, on_queued: client.outpaint(
            prompt,
            image=image,
            left=left,
            top=top,
            right=right,
            bottom=bottom,
            feather_px=feather,
            negative_prompt=negative,
            steps=steps,
            true_cfg_scale=cfg,
            seed=seed,
            output_format=image_format,
            on_progress=on_progress,
            on_queued=on_queued,
        )
    )
    _write(result, output)


def edit(
    instruction: str = typer.Argument(..., help='What to change, e.g. "make the sky pink".'),
    image: Path = typer.Option(..., "--image", exists=True, help="Image to edit."),
    output: Path = _OUTPUT,
    width: int = typer.Option(0, help="Width in pixels, multiple of 16 (0 = the image's, rounded down)."),
    height: int = typer.Option(0, help="Height in pixels, multiple of 16 (0 = the image's, rounded down)."),
    seed: int | None = _SEED,
    steps: int = _STEPS,
    negative: str = _NEGATIVE,
    cfg: float | None = _CFG,
) -> None:
    """Change an image as an instruction says (Qwen-Image-Edit), no mask."""
    image_format = output_format(output)
    result = generating(
        lambda client, on_progress, on_queued: client.edit(
            instruction,
            image=image,
            width=width,
            height=height,
            negative_prompt=negative,
            steps=steps,
            true_cfg_scale=cfg,
            seed=seed,
            output_format=image_format,
            on_progress=on_progress,
            on_queued=on_queued,
        )
    )
    _write(result, output)
