"""Live previews: the image so far, from the latents alone, as ComfyUI's latent2rgb previews do.

No VAE decode: the 16 latent channels are projected to RGB by a fixed linear map, the one ComfyUI
ships for the Wan-2.1 VAE latent space that Qwen-Image's VAE shares (`comfy/latent_formats.py`,
`Wan21.latent_rgb_factors` and `latent_rgb_factors_bias`; pipeline latents are already in its
normalised space). What is projected is the step's estimate of the clean image: with flow matching,
x_t = (1 - σ) x0 + σ ε, so two consecutive latents give the velocity and x0 = x_next - σ_next v; the
first preview, with no earlier latents, shows the latents as they are. The result is a JPEG at
latent resolution (1/8 of the output for Qwen-Image's VAE), at most `MAX_SIDE` pixels a side. A VAE with fewer latent
channels (the tiny test preset has 4) uses the first rows of the map.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)
MAX_SIDE = 256
JPEG_QUALITY = 70


class Previewer:
    """Previews of one pipeline call: `every[r]` steps for request r (0 = none), whose first image is
    image `first[r]` of the batch."""

    def __init__(self, every: Sequence[int], first: Sequence[int], width: int, height: int) -> None:
        self.every = list(every)
        self.first = list(first)
        self.width, self.height = width, height
        self._previous: torch.Tensor | None = None

    @property
    def active(self) -> bool:
        return any(self.every)

    def after_step(self, pipe: Any, step: int, latents: torch.Tensor) -> list[bytes]:
        """Per request, the preview due after `step` (1-based) or b"" when none is."""
        due = [bool(every) and step % every == 0 for every in self.every]
        previews = [b""] * len(self.every)
        if any(due):
            clean = self._clean_estimate(pipe, latents)
            for index, wanted in enumerate(due):
                if wanted:
                    previews[index] = self._render(pipe, clean[self.first[index] : self.first[index] + 1])
        self._previous = latents.detach().clone()
        return previews

    def _clean_estimate(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        scheduler = pipe.scheduler
        index = getattr(scheduler, "step_index", None)
        if self._previous is None or index is None or index < 1:
            return latents
        sigma_next, sigma = float(scheduler.sigmas[index]), float(scheduler.sigmas[index - 1])
        if sigma_next == sigma:
            return latents
        velocity = (latents - self._previous) / (sigma_next - sigma)
        return latents - sigma_next * velocity

    def _render(self, pipe: Any, packed: torch.Tensor) -> bytes:
        latent = pipe._unpack_latents(packed, self.height, self.width, pipe.vae_scale_factor)[:, :, 0]  # B C h w
        # The tiny preset's VAE has 4 channels, the real one 16: a smaller one takes the first rows.
        factors = torch.tensor(LATENT_RGB_FACTORS[: latent.shape[1]], dtype=torch.float32, device=latent.device)
        bias = torch.tensor(LATENT_RGB_BIAS, dtype=torch.float32, device=latent.device)
        rgb = torch.nn.functional.linear(latent[0].float().movedim(0, -1), factors.T, bias)  # h w 3
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        image = Image.fromarray(pixels, "RGB")
        if max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()
