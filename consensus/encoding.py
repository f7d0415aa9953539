"""The one canonical binary encoding: versioned msgpack arrays, schema-checked.

Every protocol object is a msgpack array ``[tag, version, field1, field2, ...]``
with fields in declaration order and no maps, floats, bools, nils or extension
types anywhere. A field added by a later protocol version is declared with `since`
and a default: an object whose later fields all hold their defaults encodes as the
earlier version (so every version-1 object keeps its bytes and its hash), otherwise
as the latest version its fields need, with every field up to that version. An encoding is canonical when re-encoding the decoded value
gives the same bytes (msgpack-python always emits the shortest form), so a
content hash identifies exactly one object and a peer cannot vary the bytes of
a message without changing its id. `decode` checks every size and shape limit
and raises only `DecodeError`.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import msgpack

from consensus.crypto import sha256
from consensus.errors import DecodeError

ENCODING_VERSION = 1  # the first version; later fields name theirs with `since`
SIGNING_DOMAIN = b"zkpot/sig/v1/"


@dataclass(frozen=True)
class UInt:
    """A non-negative integer in [lo, hi]."""

    lo: int = 0
    hi: int = 2**64 - 1


@dataclass(frozen=True)
class Bytes:
    """A msgpack bin of length in [lo, hi]."""

    lo: int
    hi: int


@dataclass(frozen=True)
class Text:
    """Printable ASCII of length in [lo, hi]: names only, never free-form data."""

    lo: int
    hi: int


@dataclass(frozen=True)
class ListOf:
    """An array of `item`; `strictly_sorted` makes order canonical and items unique."""

    item: Kind
    hi: int
    lo: int = 0
    strictly_sorted: bool = False


@dataclass(frozen=True)
class Struct:
    """A nested protocol object, encoded as its own tagged array."""

    cls: type[Wire]


Kind = UInt | Bytes | Text | ListOf | Struct


def wire(kind: Kind, *, since: int = ENCODING_VERSION, default: Any = dataclasses.MISSING) -> Any:
    """Declare a dataclass field's wire kind (its schema); a field a later version added
    names that version and the default its earlier encodings stand for."""
    if since != ENCODING_VERSION and default is dataclasses.MISSING:
        raise TypeError("a field added by a later version needs a default")
    # keyword-only, so a signed type's `signature` may stay its last field after them
    later = since != ENCODING_VERSION
    return dataclasses.field(
        default=default, metadata={"wire": kind, "since": since}, kw_only=later
    )


def _since(f: dataclasses.Field[Any]) -> int:
    return int(f.metadata.get("since", ENCODING_VERSION))


class Wire:
    """Base of protocol objects: frozen dataclasses whose fields carry a wire kind."""

    TAG: ClassVar[int]
    NAME: ClassVar[str]
    MAX_BYTES: ClassVar[int]

    def version(self) -> int:
        """The earliest version that carries every non-default field."""
        return max(
            (
                _since(f)
                for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if _since(f) > ENCODING_VERSION and getattr(self, f.name) != f.default
            ),
            default=ENCODING_VERSION,
        )

    def to_obj(self) -> list[Any]:
        version = self.version()
        out: list[Any] = [self.TAG, version]
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if _since(f) <= version:
                out.append(_to_obj(getattr(self, f.name)))
        return out

    def encode(self) -> bytes:
        return pack(self.to_obj())

    def hash(self) -> bytes:
        """Content id: sha256 of the canonical encoding."""
        return sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{cls.NAME}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > cls.MAX_BYTES:
            raise DecodeError(f"{cls.NAME}: {len(data)} bytes exceeds the limit of {cls.MAX_BYTES}")
        value = unpack(data, cls.NAME)
        obj: Self = _from_obj(cls, value, cls.NAME)
        if pack(obj.to_obj()) != data:
            raise DecodeError(f"{cls.NAME}: non-canonical encoding (re-encoding differs)")
        return obj


class Signed(Wire):
    """A Wire object whose last field, `signature`, signs all the others."""

    signature: bytes

    def signing_bytes(self, chain_id: bytes) -> bytes:
        """Domain-separated by type and chain, so a signature never replays elsewhere."""
        body = self.to_obj()[:-1]
        return SIGNING_DOMAIN + self.NAME.encode() + b"\x00" + chain_id + pack(body)


def peek_tag(data: bytes) -> int | None:
    """The type tag of a canonical `[tag, version, ...]` array, read without decoding it.

    Lets a receiver pick the one type to decode (and refuse the others) before any work.
    None unless `data` starts as a canonical encoding would: a fixarray of 2..15 items or
    an array16 of 16 or more, then a tag that is a positive fixint (every TAG is < 128).
    The full `decode` still checks everything.
    """
    if len(data) >= 2 and 0x92 <= data[0] <= 0x9F:
        tag = data[1]
    elif len(data) >= 4 and data[0] == 0xDC and int.from_bytes(data[1:3], "big") >= 16:
        tag = data[3]
    else:
        return None
    return tag if tag < 0x80 else None


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types; all mean "malformed"
        raise DecodeError(f"{what}: malformed msgpack ({type(exc).__name__}: {exc})") from None


def _to_obj(value: Any) -> Any:
    if isinstance(value, Wire):
        return value.to_obj()
    if isinstance(value, tuple):
        return [_to_obj(v) for v in value]
    return value


def _from_obj(cls: type[Wire], value: Any, path: str) -> Any:
    if not isinstance(value, list):
        raise DecodeError(f"{path}: expected an array, got {_tname(value)}")
    if len(value) < 2:
        raise DecodeError(f"{path}: expected [tag, version, ...], got {len(value)} elements")
    tag, version = value[0], value[1]
    if not _is_int(tag) or tag != cls.TAG:
        raise DecodeError(f"{path}: type tag {tag!r} is not {cls.NAME} (tag {cls.TAG})")
    every = dataclasses.fields(cls)  # type: ignore[arg-type]
    latest = max((_since(f) for f in every), default=ENCODING_VERSION)  # this type's latest
    if not _is_int(version) or not ENCODING_VERSION <= version <= latest:
        raise DecodeError(f"{path}: unsupported encoding version {version!r} of {cls.NAME}")
    fields = [f for f in every if _since(f) <= version]
    if len(value) != len(fields) + 2:
        raise DecodeError(f"{path}: expected {len(fields) + 2} elements, got {len(value)}")
    kwargs = {
        f.name: _check(f.metadata["wire"], v, f"{path}.{f.name}")
        for f, v in zip(fields, value[2:], strict=True)
    }
    return cls(**kwargs)


def _check(kind: Kind, value: Any, path: str) -> Any:
    if isinstance(kind, UInt):
        if not _is_int(value):
            raise DecodeError(f"{path}: expected an integer, got {_tname(value)}")
        if not kind.lo <= value <= kind.hi:
            raise DecodeError(f"{path}: {value} is outside [{kind.lo}, {kind.hi}]")
        return value
    if isinstance(kind, Bytes):
        if not isinstance(value, bytes):
            raise DecodeError(f"{path}: expected bytes, got {_tname(value)}")
        if not kind.lo <= len(value) <= kind.hi:
            raise DecodeError(f"{path}: length {len(value)} is outside [{kind.lo}, {kind.hi}]")
        return value
    if isinstance(kind, Text):
        if not isinstance(value, str):
            raise DecodeError(f"{path}: expected a string, got {_tname(value)}")
        if not kind.lo <= len(value) <= kind.hi:
            raise DecodeError(f"{path}: length {len(value)} is outside [{kind.lo}, {kind.hi}]")
        if not all(" " <= ch <= "~" for ch in value):
            raise DecodeError(f"{path}: only printable ASCII is allowed")
        return value
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise DecodeError(f"{path}: expected an array, got {_tname(value)}")
        if not kind.lo <= len(value) <= kind.hi:
            raise DecodeError(f"{path}: {len(value)} items is outside [{kind.lo}, {kind.hi}]")
        items = tuple(_check(kind.item, v, f"{path}[{i}]") for i, v in enumerate(value))
        if kind.strictly_sorted and any(a >= b for a, b in itertools.pairwise(items)):
            raise DecodeError(f"{path}: items must be strictly ascending (sorted, no duplicates)")
        return items
    return _from_obj(kind.cls, value, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tname(value: Any) -> str:
    return "nil" if value is None else type(value).__name__
