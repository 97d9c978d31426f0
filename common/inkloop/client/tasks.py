"""What a client asks the gateway to generate: one dataclass per kind, each owning its `to_pb()`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from inkloop.v1 import common_pb2

#: Image encodings by name, as results report them.
FORMATS: dict[str, common_pb2.ImageFormat] = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
}

ImageInput = bytes | str | os.PathLike[str]


@dataclass(frozen=True, kw_only=True)
class Task:
    """Parameters every kind shares. Zero values mean the model's default (the gateway fills them in);
    `seed=None` lets the gateway pick one, reported in each result image."""

    prompt: str
    negative_prompt: str = ""
    steps: int = 0
    true_cfg_scale: float | None = None
    seed: int | None = None
    num_images: int = 1
    output_format: str = "png"

    def __post_init__(self) -> None:
        if self.output_format not in FORMATS:
            raise ValueError(f"output_format must be one of {', '.join(FORMATS)}, got {self.output_format!r}")

    def parameters_pb(self, width: int = 0, height: int = 0) -> common_pb2.GenerationParameters:
        parameters = common_pb2.GenerationParameters(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            width=width,
            height=height,
            steps=self.steps,
            num_images=self.num_images,
            output_format=FORMATS[self.output_format],
        )
        if self.seed is not None:
            parameters.seed = self.seed
        if self.true_cfg_scale is not None:
            parameters.true_cfg_scale = self.true_cfg_scale
        return parameters

    def to_pb(self) -> common_pb2.GenerationTask:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TextToImage(Task):
    """A new image from a prompt; width and height in pixels, multiples of 16 (0 = the model's default)."""

    width: int = 0
    height: int = 0

    def to_pb(self) -> common_pb2.GenerationTask:
        parameters = self.parameters_pb(self.width, self.height)
        return common_pb2.GenerationTask(text_to_image=common_pb2.TextToImageRequest(parameters=parameters))


@dataclass(frozen=True, kw_only=True)
class Inpaint(Task):
    """Repaint the white part of `mask` (an image of `image`'s size); every other pixel is kept exactly."""

    image: bytes
    mask: bytes
    feather_px: int = 0

    def to_pb(self) -> common_pb2.GenerationTask:
        request = common_pb2.InpaintRequest(
            parameters=self.parameters_pb(), image=self.image, mask=self.mask, mask_feather_px=self.feather_px
        )
        return common_pb2.GenerationTask(inpaint=request)


@dataclass(frozen=True, kw_only=True)
class Outpaint(Task):
    """Extend `image`'s canvas by the given pixels per side; the original pixels are kept exactly."""

    image: bytes
    left: int = 0
    top: int = 0
    right: int = 0
    bottom: int = 0
    feather_px: int = 0

    def to_pb(self) -> common_pb2.GenerationTask:
        extension = common_pb2.OutpaintExtension(left=self.left, top=self.top, right=self.right, bottom=self.bottom)
        request = common_pb2.OutpaintRequest(
            parameters=self.parameters_pb(), image=self.image, extension=extension, feather_px=self.feather_px
        )
        return common_pb2.GenerationTask(outpaint=request)


@dataclass(frozen=True, kw_only=True)
class Edit(Task):
    """Change `image` as the instruction (`prompt`) says, no mask (Qwen-Image-Edit). Width and height 0:
    the image's size, rounded down to multiples of 16."""

    image: bytes
    width: int = 0
    height: int = 0

    def to_pb(self) -> common_pb2.GenerationTask:
        parameters = self.parameters_pb(self.width, self.height)
        return common_pb2.GenerationTask(edit=common_pb2.EditRequest(parameters=parameters, image=self.image))


def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes as given, or read from a path."""
    return image if isinstance(image, bytes) else Path(image).read_bytes()
