"""Hypothesis strategies built from protobuf descriptors: random messages of any type, mutations of a
valid message, and a cost cap so that what passes validation stays cheap to generate on a CPU.

Nothing here knows the inkloop API beyond `cheapen`: new RPCs and fields are fuzzed as soon as the
generated stubs have them.
"""

from __future__ import annotations

import functools
import io
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st
from PIL import Image

#: Submessages below this depth are left empty (descriptors may be recursive).
MAX_DEPTH = 4
MAX_REPEATED = 3

T = FieldDescriptor
_INT_RANGES = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1),
    T.TYPE_SINT32: (-(2**31), 2**31 - 1),
    T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1),
    T.TYPE_SINT64: (-(2**63), 2**63 - 1),
    T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1),
    T.TYPE_FIXED32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1),
    T.TYPE_FIXED64: (0, 2**64 - 1),
}
# Values where validation rules tend to flip: zero, one, sizes, limits and type boundaries.
_INT_EDGES = (0, 1, -1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 100, 101, 128, 1024, 2048, 2049, 4096, 86_400)
_INT_EDGES += (2**31 - 1, -(2**31), 2**32 - 1, 2**53, 2**63 - 1, -(2**63), 2**64 - 1)
_STRINGS = (
    "",
    " ",
    "a",
    "acme",
    "default",
    "a red fox in snow",
    "一只戴草帽的狐狸",
    "😀" * 20,
    "\x00",
    "\u202e\u200b",
    "../../etc/passwd",
    "'; DROP TABLE events; --",
    "%s%n{}",
    "ink_AAAAAAAAAAAA_" + "B" * 43,
    "dns:///nowhere.invalid:1",
    "127.0.0.1:1",
    "x" * 300,
    "y" * 5000,
)


def tiny_png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims another size: a decompression-bomb shaped input."""
    data = bytearray(tiny_png(1, 1))
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


TINY_PNG = tiny_png()
_BYTES = (b"", TINY_PNG, TINY_PNG[:40], _png_claiming(100_000, 100_000), _png_claiming(0, 5), b"GIF89a" + b"\0" * 20)


def integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({edge for edge in _INT_EDGES if low <= edge <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def strings() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_STRINGS), st.text(max_size=40))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        return integers(*_INT_RANGES[kind])
    if kind == T.TYPE_BOOL:
        return st.booleans()
    if kind == T.TYPE_FLOAT:
        return st.one_of(st.sampled_from([0.0, 1.0, 4.0, -1.0, 1e-45]), st.floats(width=32))
    if kind == T.TYPE_DOUBLE:
        return st.one_of(st.sampled_from([0.0, 1.0, -1.0, 1e308]), st.floats())
    if kind == T.TYPE_STRING:
        return strings()
    if kind == T.TYPE_BYTES:
        return st.one_of(st.sampled_from(_BYTES), st.binary(max_size=64))
    if kind == T.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        # proto3 enums are open: unknown numbers reach the server as they are.
        return st.one_of(st.sampled_from(numbers), integers(-(2**31), 2**31 - 1))
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type, depth + 1)
    return _scalar(field)


@functools.cache
def field_values(field: FieldDescriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of one field: a dict for a map, a list for a repeated field, else one value."""
    if _is_map(field):
        entry = field.message_type
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return st.dictionaries(_scalar(key), _single(value, depth), max_size=MAX_REPEATED)
    if field.is_repeated:
        return st.lists(_single(field, depth), max_size=MAX_REPEATED)
    return _single(field, depth)


def _plausible_timestamps(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Times around now, so time-range checks are reached, not only rejected."""
    cls = GetMessageClass(descriptor)
    now = int(time.time())
    return st.builds(lambda s, n: cls(seconds=s, nanos=n), st.integers(now - 40 * 86_400, now + 3600), st.just(0))


@functools.cache
def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of `descriptor`'s type: any subset of its fields, each with a random value."""
    cls = GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    optional = {field.name: field_values(field, depth) for field in descriptor.fields}
    random = st.fixed_dictionaries({}, optional=optional).map(lambda values: build(cls, values))  # type: ignore[arg-type]
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.one_of(_plausible_timestamps(descriptor), random)
    return random


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        set_field(message, message.DESCRIPTOR.fields_by_name[name], value)
    return message


def set_field(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Sets `field` of `message` to a value of `field_values(field)`; None clears it."""
    if value is None:
        message.ClearField(field.name)
        return
    target = getattr(message, field.name)
    if _is_map(field):
        message.ClearField(field.name)
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        message.ClearField(field.name)
        if field.message_type is not None:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


Path = tuple[FieldDescriptor, ...]


def field_paths(descriptor: Descriptor, depth: int = 0) -> list[Path]:
    """Every field reachable through singular submessages, as the chain of fields leading to it."""
    paths: list[Path] = []
    for field in descriptor.fields:
        paths.append((field,))
        if field.message_type is not None and not field.is_repeated and depth < MAX_DEPTH:
            paths.extend((field, *rest) for rest in field_paths(field.message_type, depth + 1))
    return paths


@st.composite
def mutations(draw: st.DrawFn, valid: Message, max_changes: int = 3) -> Message:
    """`valid` with one to `max_changes` fields anywhere in it set to random values or cleared."""
    message = type(valid)()
    message.CopyFrom(valid)
    paths = field_paths(message.DESCRIPTOR)
    if not paths:
        return message  # a message without fields has nothing to mutate
    for _ in range(draw(st.integers(1, max_changes))):
        path = draw(st.sampled_from(paths))
        value = draw(st.one_of(st.none(), field_values(path[-1], len(path) - 1)))
        parent = message
        for field in path[:-1]:
            parent = getattr(parent, field.name)
        set_field(parent, path[-1], value)
    return message


def submessages(message: Message) -> Iterator[Message]:
    """`message` and every message set inside it, depth first."""
    yield message
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if _is_map(field):
            items = value.values() if field.message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated:
            items = value
        else:
            items = [value]
        for item in items:
            yield from submessages(item)


def cheapen(message: Message) -> Message:
    """Caps the work a request may ask of the tiny model on CPU, in place: sizes, steps, image counts
    and outpaint borders in the range validation accepts become small accepted ones; values outside
    it are kept, so rejections are still exercised."""
    for part in submessages(message):
        name = part.DESCRIPTOR.full_name
        if name == "inkloop.v1.GenerationParameters":
            _cap(part, "steps", low=2, high=100, to=2, zero_to=2)  # 0 = the model's default, 20
            _cap(part, "width", low=65, high=2048, to=64)
            _cap(part, "height", low=65, high=2048, to=64)
            _cap(part, "num_images", low=3, high=4, to=2)
        elif name == "inkloop.v1.OutpaintExtension":
            for side in ("left", "top", "right", "bottom"):
                value = getattr(part, side)
                if 63 < value <= 4096:
                    setattr(part, side, 32 + value % 32)  # positive, same residue mod 16: as valid as before
    return message


def _cap(message: Message, name: str, *, low: int, high: int, to: int, zero_to: int | None = None) -> None:
    value = getattr(message, name)
    if low <= value <= high:
        setattr(message, name, to)
    elif value == 0 and zero_to is not None:
        setattr(message, name, zero_to)
