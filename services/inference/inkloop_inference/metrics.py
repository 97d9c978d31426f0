"""Per-request metrics of the inference service (the batcher's queue and batch metrics are in batching.py).

The phases are those every result reports in its timings, so a dashboard and a client see the same split;
`inkloop_inference_step_seconds` is the denoising time per step, this service's counterpart of an LLM
server's time per output token.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from inkloop_inference.batching import Done
from inkloop_inference.pipelines import GenerationRequest, GenerationResult

PHASE_SECONDS = Histogram(
    "inkloop_inference_phase_seconds",
    "Seconds a request spent in each phase: queue, text_encode, denoise, decode (encode included).",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
)
STEP_SECONDS = Histogram(
    "inkloop_inference_step_seconds",
    "Denoising seconds per step of a request's pipeline call.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
IMAGES = Counter("inkloop_inference_images_total", "Images generated, by kind of request.", ["kind"])


def observe(request: GenerationRequest, done: Done[GenerationResult]) -> None:
    timings = done.result.timings
    PHASE_SECONDS.labels("queue").observe(done.queue_s)
    PHASE_SECONDS.labels("text_encode").observe(timings.text_encode_s)
    PHASE_SECONDS.labels("denoise").observe(timings.denoise_s)
    PHASE_SECONDS.labels("decode").observe(timings.decode_s + timings.postprocess_s)
    STEP_SECONDS.observe(timings.denoise_s / max(request.steps, 1))
    IMAGES.labels(request.kind).inc(len(done.result.images))
