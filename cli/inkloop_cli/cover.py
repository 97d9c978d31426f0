"""`inkloop cover ARTICLE.md`: a cover image for an article, from its key phrases, through the gateway.

The prompt and the seed follow from the article alone (`inkloop.cover`), so running it again on the
same article is answered by the gateway's result cache. Next to the image goes a JSON sidecar with
the prompt, the seed, the job and whether the cache answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from inkloop.cover import cover_prompt
from inkloop_cli.client import console
from inkloop_cli.client_commands import generating, output_format


def cover(
    article: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="The article, Markdown (Chinese or English)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Image to write (.png, .jpg or .webp); default ARTICLE.cover.png."
    ),
    phrases: int = typer.Option(5, "--phrases", min=1, max=12, help="Key phrases to put in the prompt."),
    seed: int | None = typer.Option(None, help="Seed; omitted = one derived from the article."),
    steps: int = typer.Option(0, help="Denoising steps (0 = model default)."),
    width: int = typer.Option(0, help="Width in pixels, multiple of 16 (0 = model default), e.g. 1664 for 16:9."),
    height: int = typer.Option(0, help="Height in pixels, multiple of 16 (0 = model default), e.g. 928 for 16:9."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the prompt and seed as JSON; generate nothing."),
) -> None:
    """Generate a cover image for an article: key phrases → cover prompt → image + JSON sidecar."""
    image_path = output or article.with_suffix(".cover.png")
    image_format = output_format(image_path)
    try:
        prompt = cover_prompt(article.read_text(encoding="utf-8"), phrases=phrases)
    except (UnicodeDecodeError, ValueError) as error:
        console.print(f"[red]error: {article}: {error}[/]")
        raise typer.Exit(2) from None
    chosen_seed = prompt.seed if seed is None else seed
    described = {
        "article": str(article),
        "language": prompt.language,
        "title": prompt.title,
        "key_phrases": list(prompt.key_phrases),
        "prompt": prompt.prompt,
        "negative_prompt": prompt.negative_prompt,
        "seed": chosen_seed,
    }
    if dry_run:
        print(json.dumps(described, ensure_ascii=False, indent=2))
        return
    console.print(f"key phrases ({prompt.language}): {', '.join(prompt.key_phrases) or '–'}")
    result = generating(
        lambda client, on_progress, on_queued: client.generate(
            prompt.prompt,
            negative_prompt=prompt.negative_prompt,
            width=width,
            height=height,
            steps=steps,
            seed=chosen_seed,
            output_format=image_format,
            on_progress=on_progress,
            on_queued=on_queued,
        )
    )
    image = result.image
    image.save(image_path)
    sidecar = image_path.with_suffix(".json")
    record = {
        **described,
        "image": str(image_path),
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "steps": result.steps,
        "job_id": result.job_id,
        "request_id": result.request_id,
        "cache_hit": result.cache_hit,
        "model_id": result.model_id,
        "model_revision": result.model_revision,
        "variant": result.variant,
        "image_id": image.image_id,
        "download_url": image.download_url,
    }
    sidecar.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    hit = ", cache hit" if result.cache_hit else ""
    console.print(f"wrote {image_path} ({image.width}×{image.height}, seed {image.seed}, job {result.job_id}{hit})")
    console.print(f"wrote {sidecar}")
