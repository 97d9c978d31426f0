"""`inkloop generate | inpaint | outpaint`: submit through the gateway, show progress, write the image."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from inkloop.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from inkloop_cli.client import ClientSettings, console, fail

_FORMATS = {
    ".png": common_pb2.IMAGE_FORMAT_PNG,
    ".jpg": common_pb2.IMAGE_FORMAT_JPEG,
    ".jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    ".webp": common_pb2.IMAGE_FORMAT_WEBP,
}

_OUTPUT = typer.Option(..., "-o", "--output", help="Image file to write (.png, .jpg or .webp).")
_SEED = typer.Option(None, help="Seed; omitted = the server picks one and prints it.")
_STEPS = typer.Option(0, help="Denoising steps (0 = model default).")
_WIDTH = typer.Option(0, help="Width in pixels, multiple of 16 (0 = model default).")
_HEIGHT = typer.Option(0, help="Height in pixels, multiple of 16 (0 = model default).")
_NEGATIVE = typer.Option("", "--negative", help="Negative prompt.")
_CFG = typer.Option(None, "--cfg", help="True CFG scale (omitted = model default).")


def _parameters(
    prompt: str, output: Path, seed: int | None, steps: int, width: int, height: int, negative: str, cfg: float | None
) -> common_pb2.GenerationParameters:
    image_format = _FORMATS.get(output.suffix.lower())
    if image_format is None:
        console.print(f"[red]error: --output must end in one of {', '.join(_FORMATS)}[/]")
        raise typer.Exit(2)
    parameters = common_pb2.GenerationParameters(
        prompt=prompt, negative_prompt=negative, width=width, height=height, steps=steps, output_format=image_format
    )
    if seed is not None:
        parameters.seed = seed
    if cfg is not None:
        parameters.true_cfg_scale = cfg
    return parameters


def _run(task: common_pb2.GenerationTask, output: Path, template_id: str = "") -> None:
    settings = ClientSettings()
    request = gateway_pb2.GenerateRequest(request_id=uuid.uuid4().hex, task=task, template_id=template_id)
    with (
        grpc.insecure_channel(settings.gateway) as channel,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task("queued", total=None)
        try:
            for event in gateway_pb2_grpc.GatewayServiceStub(channel).Generate(request, metadata=settings.metadata()):
                which = event.WhichOneof("event")
                if which == "queued":
                    progress.update(bar, description=f"queued (position {event.queued.position})")
                elif which == "running":
                    progress.update(
                        bar, description="denoising", completed=event.running.step, total=event.running.total_steps
                    )
                elif which == "succeeded":
                    image = event.succeeded.images[0]
                    output.write_bytes(image.data)
                    progress.update(bar, description="done")
                    progress.stop()
                    console.print(
                        f"wrote {output} ({image.width}×{image.height}, seed {image.seed}, job {event.job_id})"
                    )
                    return
                elif which == "failed":
                    progress.stop()
                    field = f" (field {event.failed.field})" if event.failed.field else ""
                    console.print(f"[red]error: {event.failed.code}: {event.failed.message}{field}[/]")
                    raise typer.Exit(1)
                elif which == "cancelled":
                    progress.stop()
                    console.print("[yellow]cancelled[/]")
                    raise typer.Exit(1)
        except grpc.RpcError as error:
            progress.stop()
            raise fail(error) from None
    console.print("[red]error: the stream ended without a result[/]")
    raise typer.Exit(1)


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
    parameters = _parameters(prompt, output, seed, steps, width, height, negative, cfg)
    task = common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))
    _run(task, output, template)


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
    parameters = _parameters(prompt, output, seed, steps, 0, 0, negative, cfg)
    request = common_pb2.InpaintRequest(
        parameters=parameters, image=image.read_bytes(), mask=mask.read_bytes(), mask_feather_px=feather
    )
    _run(common_pb2.GenerationTask(inpaint=request), output)


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
    parameters = _parameters(prompt, output, seed, steps, 0, 0, negative, cfg)
    extension = common_pb2.OutpaintExtension(left=left, top=top, right=right, bottom=bottom)
    request = common_pb2.OutpaintRequest(
        parameters=parameters, image=image.read_bytes(), extension=extension, feather_px=feather
    )
    _run(common_pb2.GenerationTask(outpaint=request), output)
