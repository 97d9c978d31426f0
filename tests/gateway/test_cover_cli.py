"""`inkloop cover` against a real gateway: image and sidecar written, the second run a cache hit, both
languages; and `inkloop generate`'s output and exit codes through the client."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from inkloop.cover import cover_prompt
from inkloop_cli import app

from .conftest import Gateway

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
SMALL = ["--width", "64", "--height", "64", "--steps", "2"]


def cli_env(gateway: Gateway) -> dict[str, str]:
    return {
        "INKLOOP_GATEWAY": f"127.0.0.1:{gateway.running.port}",
        "INKLOOP_API_KEY": gateway.secrets["acme"],
        "COLUMNS": "200",  # no line breaks in what the tests read
    }


async def inkloop(gateway: Gateway, *args: str) -> tuple[int, str]:
    """Runs the CLI (in a thread: the gateway serves from this event loop); its exit code and stderr."""
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=cli_env(gateway))
    return result.exit_code, result.stderr


@pytest.mark.parametrize("name", ["article-zh.md", "article-en.md"])
async def test_cover_writes_the_image_and_sidecar_and_the_second_run_is_a_cache_hit(
    gateway: Gateway, tmp_path: Path, name: str
) -> None:
    article = EXAMPLES / name
    output = tmp_path / "cover.png"
    code, err = await inkloop(gateway, "cover", str(article), "-o", str(output), *SMALL)
    assert code == 0, err
    expected = cover_prompt(article.read_text(encoding="utf-8"))
    assert ", ".join(expected.key_phrases) in err and "cache hit" not in err
    first = json.loads((tmp_path / "cover.json").read_text(encoding="utf-8"))
    assert first["prompt"] == expected.prompt and first["seed"] == expected.seed
    assert first["key_phrases"] == list(expected.key_phrases) and first["language"] == expected.language
    assert first["job_id"].startswith("job_") and first["cache_hit"] is False
    assert (first["width"], first["height"], first["format"]) == (64, 64, "png")
    image = output.read_bytes()
    assert Image.open(io.BytesIO(image)).size == (64, 64)

    code, err = await inkloop(gateway, "cover", str(article), "-o", str(output), *SMALL)
    assert code == 0, err
    again = json.loads((tmp_path / "cover.json").read_text(encoding="utf-8"))
    assert again["cache_hit"] is True and "cache hit" in err
    assert again["job_id"] != first["job_id"] and again["seed"] == first["seed"]
    assert output.read_bytes() == image


async def test_cover_defaults_its_output_beside_the_article_and_dry_run_generates_nothing(
    gateway: Gateway, tmp_path: Path
) -> None:
    article = tmp_path / "post.md"
    article.write_text((EXAMPLES / "article-en.md").read_text(encoding="utf-8"), encoding="utf-8")
    dry = await asyncio.to_thread(CliRunner().invoke, app, ["cover", str(article), "--dry-run"], env=cli_env(gateway))
    assert dry.exit_code == 0 and json.loads(dry.stdout)["key_phrases"][0] == "lighthouses"
    assert not (tmp_path / "post.cover.png").exists()
    code, err = await inkloop(gateway, "cover", str(article), *SMALL, "--seed", "3", "--phrases", "2")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "post.cover.json").read_text(encoding="utf-8"))
    assert (tmp_path / "post.cover.png").exists() and sidecar["seed"] == 3 and len(sidecar["key_phrases"]) == 2


async def test_cover_errors_exit_non_zero_with_the_status(gateway: Gateway, tmp_path: Path) -> None:
    article = EXAMPLES / "article-en.md"
    code, err = await inkloop(gateway, "cover", str(article), "-o", str(tmp_path / "cover.gif"))
    assert code == 2 and "--output must end in one of" in err
    code, err = await inkloop(gateway, "cover", str(article), "-o", str(tmp_path / "c.png"), "--width", "100")
    assert code == 1 and "INVALID_ARGUMENT" in err and "width" in err
    assert not (tmp_path / "c.json").exists()


async def test_generate_through_the_client_keeps_its_output_and_exit_codes(gateway: Gateway, tmp_path: Path) -> None:
    output = tmp_path / "fox.png"
    code, err = await inkloop(gateway, "generate", "一只狐狸 a fox", "-o", str(output), "--seed", "4", *SMALL)
    assert code == 0, err
    assert f"wrote {output} (64×64, seed 4, job job_" in err
    code, err = await inkloop(gateway, "outpaint", "more", "--image", str(output), "--right", "16", "-o", str(output))
    assert code == 0 and Image.open(output).size == (80, 64)
    code, err = await inkloop(gateway, "generate", "a fox", "-o", str(tmp_path / "x.png"), "--width", "100")
    assert code == 1 and "error: INVALID_ARGUMENT" in err and "field" in err


async def test_inkloop_edit_writes_the_edited_image_at_the_images_size(gateway: Gateway, tmp_path: Path) -> None:
    source = tmp_path / "room.png"
    Image.new("RGB", (80, 64), (200, 40, 40)).save(source)
    output = tmp_path / "edited.webp"
    args = ["edit", "把墙刷成蓝色", "--image", str(source), "-o", str(output), "--seed", "2", "--steps", "2"]
    code, err = await inkloop(gateway, *args, "--cfg", "1")
    assert code == 0, err
    assert f"wrote {output} (80×64, seed 2, job job_" in err
    with Image.open(output) as written:
        assert (written.format, written.size) == ("WEBP", (80, 64))
    code, err = await inkloop(gateway, "edit", "x", "--image", str(source), "-o", str(output), "--width", "100")
    assert code == 1 and "INVALID_ARGUMENT" in err and "task.edit.parameters.width" in err
