"""Result images on disk, tenant-scoped, and the signed URLs that let a browser fetch them.

Layout: `<image dir>/<tenant>/<image id>.<png|jpg|webp>` plus `<image id>.json` (the job it came from,
for download events; written just after the image, so a crash in between leaves an image whose
downloads name no job). The id is a hash of the tenant and the bytes: the same image stored twice
(a cache hit) is one file, and ids say nothing across tenants. With several gateway replicas the
image dir must be a shared volume.

A signed URL carries the tenant, an expiry and an HMAC-SHA256 over both and the image id, so an
`<img src>` or a download link works without an API key until it expires; the extension is not
signed, so any format can be asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

from PIL import Image

from inkloop import errors

log = logging.getLogger(__name__)

#: Extension -> (Pillow format, MIME type, save options).
FORMATS: dict[str, tuple[str, str, dict[str, object]]] = {
    "png": ("PNG", "image/png", {}),
    "jpg": ("JPEG", "image/jpeg", {"quality": 95}),
    "webp": ("WEBP", "image/webp", {"quality": 95}),
}
#: common_pb2.ImageFormat value -> extension (0 = unspecified = PNG).
EXTENSION_OF_FORMAT = {0: "png", 1: "png", 2: "jpg", 3: "webp"}
_IMAGE_ID = re.compile(r"^[0-9a-f]{32}$")
_TENANT = re.compile(r"^[a-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class StoredImage:
    image_id: str
    tenant_id: str
    data: bytes
    extension: str
    #: The job that first produced it: job_id, request_id, user_id, variant.
    origin: dict[str, str]


def load_or_create_secret(path: Path) -> bytes:
    """The URL-signing secret kept in `path` (0600), created on first use so restarts keep URLs valid."""
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    return secret


class ImageStore:
    def __init__(self, root: Path, signing_secret: bytes, url_ttl_s: int, *, inline_write_bytes: int = 0) -> None:
        self.root = root
        self._root = str(root)
        self._secret = signing_secret
        self._url_ttl_s = url_ttl_s
        #: Images up to this size are written on the event loop (a fraction of a millisecond on a local disk).
        self._inline_write_bytes = inline_write_bytes
        self._unwritten_origins: dict[tuple[str, str], dict[str, str]] = {}
        self._origin_writes: set[asyncio.Task[None]] = set()
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def image_id(tenant_id: str, data: bytes) -> str:
        return hashlib.sha256(tenant_id.encode() + b"\0" + data).hexdigest()[:32]

    def has(self, tenant_id: str, data: bytes, image_format: int) -> str | None:
        """The id of these bytes if this tenant already has them stored (a stat, cheap on the event loop)."""
        image_id = self.image_id(tenant_id, data)
        # os.path on a str: this runs on every cache hit, and pathlib's joins cost more than the stat.
        extension = EXTENSION_OF_FORMAT.get(image_format, "png")
        return image_id if os.path.exists(f"{self._root}/{tenant_id}/{image_id}.{extension}") else None

    def origin_of(self, tenant_id: str, data: bytes) -> dict[str, str]:
        """The origin record of these bytes when they are an image this tenant's jobs produced (the page
        edits the PNG it was served), else {}."""
        image_id = self.image_id(tenant_id, data)
        return self._unwritten_origins.get((tenant_id, image_id)) or self._read_origin(tenant_id, image_id)

    def _path(self, tenant_id: str, image_id: str, image_format: int) -> Path:
        return self.root / tenant_id / f"{image_id}.{EXTENSION_OF_FORMAT.get(image_format, 'png')}"

    async def save(self, tenant_id: str, data: bytes, image_format: int, origin: dict[str, str]) -> str:
        """Stores the encoded image for `tenant_id`; returns its id. Idempotent for the same bytes.

        The image is on disk when this returns. Its origin record follows in the background: creating
        a file is the slow part of a save, the record only serves download events, and until it is
        written `load` answers from memory."""
        image_id = self.image_id(tenant_id, data)
        if len(data) <= self._inline_write_bytes:  # waiting for a worker thread would cost more than the write
            created = self._write_image(tenant_id, image_id, data, image_format)
        else:
            created = await asyncio.to_thread(self._write_image, tenant_id, image_id, data, image_format)
        if not created:
            return image_id  # stored before: its origin is the job that first produced it
        key = (tenant_id, image_id)
        self._unwritten_origins[key] = origin
        write = asyncio.create_task(asyncio.to_thread(self._write_origin, tenant_id, image_id, origin))
        self._origin_writes.add(write)
        write.add_done_callback(self._origin_writes.discard)
        write.add_done_callback(lambda _done: self._unwritten_origins.pop(key, None))
        return image_id

    async def aclose(self) -> None:
        """Waits for the origin records still being written."""
        await asyncio.gather(*self._origin_writes, return_exceptions=True)

    def _write_image(self, tenant_id: str, image_id: str, data: bytes, image_format: int) -> bool:
        path = self._path(tenant_id, image_id, image_format)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        return True

    def _write_origin(self, tenant_id: str, image_id: str, origin: dict[str, str]) -> None:
        try:
            _write_atomically(self.root / tenant_id / f"{image_id}.json", json.dumps(origin).encode())
        except OSError:  # downloads of this image will carry no job in their events; the image is fine
            log.warning("writing an image's origin record failed", exc_info=True, extra={"image_id": image_id})

    def load(self, tenant_id: str, image_id: str) -> StoredImage:
        """The stored image; `NotFound` when it does not exist for this tenant."""
        if not (_IMAGE_ID.match(image_id) and _TENANT.match(tenant_id)):
            raise errors.NotFound("image not found")
        for extension in FORMATS:
            path = self.root / tenant_id / f"{image_id}.{extension}"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            origin = self._unwritten_origins.get((tenant_id, image_id)) or self._read_origin(tenant_id, image_id)
            return StoredImage(image_id, tenant_id, data, extension, origin)
        raise errors.NotFound("image not found")

    def _read_origin(self, tenant_id: str, image_id: str) -> dict[str, str]:
        try:
            return dict(json.loads((self.root / tenant_id / f"{image_id}.json").read_bytes()))
        except (FileNotFoundError, ValueError):
            return {}

    def download_url(self, tenant_id: str, image_id: str, extension: str = "png") -> str:
        """Path + query of a signed download link valid for the configured TTL."""
        expires = int(time.time()) + self._url_ttl_s
        signature = self._sign(tenant_id, image_id, expires)
        # What urlencode of these three fields gives (expires and the hex signature need no quoting).
        return f"/v1/images/{image_id}.{extension}?tenant={quote_plus(tenant_id)}&expires={expires}&sig={signature}"

    def verify(self, tenant_id: str, image_id: str, expires: str, signature: str) -> bool:
        """Whether a signed URL's fields are genuine and unexpired."""
        try:
            expiry = int(expires)
        except ValueError:
            return False
        if expiry < time.time():
            return False
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
        return hmac.compare_digest(self._sign(tenant_id, image_id, expiry).encode(), signature.encode())

    def _sign(self, tenant_id: str, image_id: str, expires: int) -> str:
        message = f"{tenant_id}\n{image_id}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def convert(data: bytes, extension: str) -> bytes:
    """Re-encodes an image in the format of `extension` (CPU-bound: call it off the event loop)."""
    pil_format, _mime, options = FORMATS[extension]
    with Image.open(io.BytesIO(data)) as image:
        if image.format == pil_format:
            return data
        converted = image.convert("RGB") if pil_format == "JPEG" else image
        buffer = io.BytesIO()
        converted.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
