"""Output-image safety: every generated image checked before it is stored or returned, by tenant policy.

The classifier is NudeNet's detector (PyPI `nudenet`, a 12 MB ONNX model shipped in the wheel, run by
onnxruntime on the CPU). Its wheel's metadata says MIT but the LICENSE files it ships are AGPL-3.0, so
inkloop treats it as AGPL-3.0: it is the optional extra `image-safety`, never a dependency of the
default install or images; operators who enable it accept its licence. An image is unsafe when the
detector finds an exposed intimate body part (`UNSAFE_LABELS`) with at least `threshold` confidence.

What happens then is the tenant's policy (`image-safety-tenant-actions`, else `image-safety-action`):
`block` fails the job FAILED_PRECONDITION naming the policy, `blur` stores and returns a heavily
blurred image instead, `flag` keeps it. Each finding is a back-end event (IMAGE_FLAGGED) with the
policy name and the action, never the image. A result with any finding is never put in the shared
result cache, whose entries serve every tenant whatever its policy.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image, ImageFilter

POLICY = "image-nudity"
UNSAFE_LABELS = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
_FORMATS = {1: "PNG", 2: "JPEG", 3: "WEBP"}  # common_pb2.ImageFormat values


class Action(enum.StrEnum):
    BLOCK = "block"
    BLUR = "blur"
    FLAG = "flag"


@dataclass(frozen=True)
class Finding:
    label: str
    score: float


class Classifier(Protocol):
    def findings(self, data: bytes) -> list[Finding]:
        """The unsafe things found in one encoded image."""
        ...


class NudeNet:
    """NudeNet's ONNX detector (loaded once, on first use)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._detector: Any = None

    def findings(self, data: bytes) -> list[Finding]:
        if self._detector is None:
            try:
                from nudenet import NudeDetector
            except ImportError:
                raise RuntimeError(
                    "image-safety is nudenet but the package is missing: install the `image-safety` extra"
                ) from None
            self._detector = NudeDetector()
        return [
            Finding(found["class"], float(found["score"]))
            for found in self._detector.detect(data)
            if found["class"] in UNSAFE_LABELS and float(found["score"]) >= self.threshold
        ]


@dataclass(frozen=True)
class Review:
    """What the check decided for one result: the action (None = nothing found) and each image's findings."""

    action: Action | None
    findings: tuple[tuple[Finding, ...], ...]

    @property
    def found(self) -> bool:
        return any(self.findings)


@dataclass
class ImageSafety:
    classifier: Classifier
    default: Action | None
    per_tenant: Mapping[str, Action | None] = field(default_factory=dict)
    policy: str = POLICY

    def action_for(self, tenant_id: str) -> Action | None:
        return self.per_tenant.get(tenant_id, self.default)

    def review(self, tenant_id: str, images: Sequence[bytes]) -> Review:
        """Checks the images (blocking: call from a worker thread). Every tenant's are checked, also one
        whose action is off: a result with a finding must stay out of the cache all tenants share."""
        findings = tuple(tuple(self.classifier.findings(data)) for data in images)
        return Review(self.action_for(tenant_id) if any(findings) else None, findings)


def blurred(data: bytes, image_format: int) -> bytes:
    """The image so blurred that nothing in it can be made out, in its own format and size."""
    with Image.open(io.BytesIO(data)) as image:
        radius = max(image.size) / 16
        out = io.BytesIO()
        image.convert("RGB").filter(ImageFilter.GaussianBlur(radius)).save(
            out, format=_FORMATS.get(image_format, "PNG")
        )
    return out.getvalue()


def image_safety_from_settings(
    mode: str, action: str, tenant_actions: Mapping[str, str], threshold: float
) -> ImageSafety | None:
    """None when the check is off for everyone."""
    if mode == "off":
        return None
    actions = {tenant: None if value == "off" else Action(value) for tenant, value in tenant_actions.items()}
    return ImageSafety(NudeNet(threshold), None if action == "off" else Action(action), actions)
