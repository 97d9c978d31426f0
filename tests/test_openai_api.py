"""The OpenAI-compatible Images API of a real `inkloop up`, called with the official `openai` package:
generations as b64_json and as URLs, an edit with a mask (pixels outside it exact), an outpaint, the
models list, and the errors OpenAI clients handle (a bad size, a missing key, a rate-limited key)."""

from __future__ import annotations

import base64
import io
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PIL import Image, ImageChops
from test_up import INKLOOP, System, running_system

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: A fresh key may make this many requests at once; the rate test spends one key's burst.
BURST = 4


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = {"INKLOOP_GATEWAY_RATE_KEY_REQUESTS_BURST": str(BURST), "INKLOOP_GATEWAY_RATE_KEY_REQUESTS_PER_S": "0.01"}
    with running_system(tmp_path_factory.mktemp("up-openai"), env=env) as running:
        yield running


def _new_key(system: System) -> str:
    created = subprocess.run(
        [INKLOOP, "keys", "create", "dev", "--role", "user", "--data-dir", str(system.data_dir / "gateway")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[0]  # the secret alone on stdout


def _client(system: System, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=key or _new_key(system), base_url=f"http://127.0.0.1:{system.http}/v1", max_retries=0, timeout=120
    )


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_generate_two_images_as_b64_json_and_as_urls(system: System) -> None:
    client = _client(system)
    extra = {"seed": 11, "num_inference_steps": 2, "negative_prompt": "blurry", "true_cfg_scale": 2.0}
    inline = client.images.generate(
        model="default", prompt="一只狐狸 a fox", n=2, size="64x64", response_format="b64_json", extra_body=extra
    )
    assert len(inline.data) == 2
    first, second = (_image(base64.b64decode(item.b64_json or "")) for item in inline.data)
    assert first.size == second.size == (64, 64) and first.format == "PNG"
    assert ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is not None  # two seeds

    linked = client.images.generate(
        prompt="一只狐狸 a fox", n=2, size="64x64", response_format="url", extra_body={**extra, "output_format": "webp"}
    )
    assert len(linked.data) == 2
    for item in linked.data:
        assert item.url and "download=1" in item.url
        with urllib.request.urlopen(item.url, timeout=30) as reply:
            fetched = _image(reply.read())
        assert fetched.format == "WEBP" and fetched.size == (64, 64)


def test_edit_with_a_transparent_mask_keeps_every_pixel_outside_it(system: System, tmp_path: Path) -> None:
    client = _client(system)
    made = client.images.generate(
        prompt="a red kite over hills",
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 3, "num_inference_steps": 2},
    )
    source = _image(base64.b64decode(made.data[0].b64_json or "")).convert("RGB")
    # OpenAI's mask: fully transparent pixels are the area to edit (here the left half).
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
    image_file, mask_file = tmp_path / "source.png", tmp_path / "mask.png"
    source.save(image_file)
    mask.save(mask_file)
    with image_file.open("rb") as image, mask_file.open("rb") as edit_area:
        edited = client.images.edit(
            image=image,
            mask=edit_area,
            prompt="a blue kite",
            n=1,
            size="64x64",
            response_format="b64_json",
            extra_body={"seed": 5, "num_inference_steps": 2},
        )
    result = _image(base64.b64decode(edited.data[0].b64_json or "")).convert("RGB")
    assert result.size == (64, 64)
    kept = (32, 0, 64, 64)
    assert ImageChops.difference(result.crop(kept), source.crop(kept)).getbbox() is None
    assert ImageChops.difference(result.crop((0, 0, 32, 64)), source.crop((0, 0, 32, 64))).getbbox() is not None


def test_outpaint_through_extra_fields_of_an_edit(system: System, tmp_path: Path) -> None:
    client = _client(system)
    source = Image.new("RGB", (64, 64), (200, 40, 40))
    image_file = tmp_path / "square.png"
    source.save(image_file)
    with image_file.open("rb") as image:
        wider = client.images.edit(
            image=image,
            prompt="more of the same",
            response_format="b64_json",
            extra_body={"extend_right": 32, "num_inference_steps": 2, "seed": 1},
        )
    result = _image(base64.b64decode(wider.data[0].b64_json or "")).convert("RGB")
    assert result.size == (96, 64)
    assert ImageChops.difference(result.crop((0, 0, 64, 64)), source).getbbox() is None


def test_an_edit_without_a_mask_is_an_instruction_edit_at_the_asked_size(system: System, tmp_path: Path) -> None:
    client = _client(system)
    image_file = tmp_path / "photo.png"
    Image.new("RGB", (80, 64), (40, 160, 60)).save(image_file)
    with image_file.open("rb") as image:
        edited = client.images.edit(
            image=image,
            prompt="把草地变成雪地 turn the grass to snow",
            size="96x64",
            response_format="b64_json",
            extra_body={"num_inference_steps": 2, "seed": 8, "true_cfg_scale": 1.0},
        )
    result = _image(base64.b64decode(edited.data[0].b64_json or ""))
    assert result.size == (96, 64)  # an edit may redraw at another size; an inpaint could not
    with image_file.open("rb") as image, pytest.raises(openai.BadRequestError) as bad:
        client.images.edit(image=image, prompt="x", size="100x64", extra_body={"num_inference_steps": 2})
    assert (bad.value.status_code, bad.value.param) == (400, "size")


def test_models_lists_the_variants(system: System) -> None:
    listed = _client(system).models.list()
    assert [model.id for model in listed.data] == ["default"]
    with pytest.raises(openai.NotFoundError) as unknown:
        _client(system).images.generate(model="dall-e-3", prompt="a fox", size="64x64")
    assert unknown.value.code == "model_not_found"


def test_a_bad_size_names_the_parameter(system: System) -> None:
    client = _client(system)
    for size in ("big", "100x64"):
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(prompt="a fox", size=size)  # type: ignore[arg-type]
        assert (bad.value.status_code, bad.value.param, bad.value.type) == (400, "size", "invalid_request_error")


def test_a_missing_or_wrong_key_is_401(system: System) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong:
        _client(system, key="ink_not-a-key").images.generate(prompt="a fox", size="64x64")
    assert wrong.value.status_code == 401
    request = urllib.request.Request(
        f"http://127.0.0.1:{system.http}/v1/images/generations", data=b'{"prompt": "a fox"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 401
    assert b'"type": "authentication_error"' in missing.value.read()


def test_a_rate_limited_key_gets_429_with_retry_after(system: System) -> None:
    client = _client(system)
    for _ in range(BURST):
        client.images.generate(prompt="a fox", size="64x64", extra_body={"num_inference_steps": 2})
    with pytest.raises(openai.RateLimitError) as limited:
        client.images.generate(prompt="a fox", size="64x64", extra_body={"num_inference_steps": 2})
    assert limited.value.status_code == 429
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert limited.value.code == "rate_limit_exceeded"
