"""Generate and edit with the official `openai` SDK against a local `inkloop up` (the gateway's
OpenAI-compatible Images API on the HTTP port), as a client of SGLang-Diffusion or vLLM-Omni would.

    .venv/bin/python examples/openai_images.py

The key is the development key `inkloop up` wrote to var/dev-api-key (any user-role key works).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

from openai import OpenAI
from PIL import Image

client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=Path("var/dev-api-key").read_text().strip())

result = client.images.generate(
    model="default",  # a variant name (GET /v1/models); "default" = your sticky A/B variant
    prompt="一只戴草帽的狐狸 a fox in a straw hat",
    n=1,
    size="auto",  # or "WxH" within the model's limits
    response_format="b64_json",
    extra_body={"seed": 7, "negative_prompt": "blurry", "priority": "interactive"},
)
fox = base64.b64decode(result.data[0].b64_json or "")
Path("openai-fox.png").write_bytes(fox)

# Edit: OpenAI's mask semantics, fully transparent pixels are the area to repaint (here the top half).
width, height = Image.open(io.BytesIO(fox)).size
mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
mask.paste((0, 0, 0, 0), (0, 0, width, height // 2))
mask_png = io.BytesIO()
mask.save(mask_png, format="PNG")
edited = client.images.edit(
    image=("fox.png", fox, "image/png"),
    mask=("mask.png", mask_png.getvalue(), "image/png"),
    prompt="a starry night sky",
    response_format="url",
)
print("generated openai-fox.png; the edit is at", edited.data[0].url)
