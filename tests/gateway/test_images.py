"""The image store on a real directory: ids, tenancy, and the origin record written after the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from inkloop import errors
from inkloop_gateway.media.images import ImageStore

PNG = 1
ORIGIN = {"job_id": "j1", "request_id": "r1", "user_id": "u1", "variant": "control"}


def _store(root: Path, inline_write_bytes: int = 0) -> ImageStore:
    return ImageStore(root, b"secret", url_ttl_s=60, inline_write_bytes=inline_write_bytes)


@pytest.mark.parametrize("inline_write_bytes", [0, 1 << 20], ids=["worker-thread", "inline"])
async def test_saved_image_loads_with_its_origin_before_and_after_the_record_is_written(
    tmp_path: Path, inline_write_bytes: int
) -> None:
    store = _store(tmp_path, inline_write_bytes)
    image_id = await store.save("acme", b"png bytes", PNG, ORIGIN)
    assert (tmp_path / "acme" / f"{image_id}.png").read_bytes() == b"png bytes"
    early = store.load("acme", image_id)  # the record may still be on its way to disk
    assert early.data == b"png bytes" and early.origin == ORIGIN
    await store.aclose()
    assert _store(tmp_path).load("acme", image_id).origin == ORIGIN  # from disk, in a fresh store


async def test_the_same_bytes_keep_the_first_origin_and_tenants_do_not_share_ids(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = await store.save("acme", b"same", PNG, ORIGIN)
    again = await store.save("acme", b"same", PNG, {**ORIGIN, "job_id": "j2"})
    other = await store.save("globex", b"same", PNG, {**ORIGIN, "job_id": "j3"})
    await store.aclose()
    assert again == first and other != first
    assert _store(tmp_path).load("acme", first).origin["job_id"] == "j1"
    with pytest.raises(errors.NotFound):
        store.load("globex", first)


async def test_an_image_whose_origin_record_is_missing_still_loads(tmp_path: Path) -> None:
    store = _store(tmp_path)
    image_id = await store.save("acme", b"bytes", PNG, ORIGIN)
    await store.aclose()
    (tmp_path / "acme" / f"{image_id}.json").unlink()  # e.g. a crash between the two writes
    assert _store(tmp_path).load("acme", image_id).origin == {}
