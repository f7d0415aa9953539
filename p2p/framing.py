"""Length-prefixed frames on libp2p streams, with our own limits and deadlines.

py-libp2p's `read_varint_prefixed_bytes` fails above ~6.5 MB and trusts the peer's
length prefix for its buffer; here the prefix is checked against a per-protocol
limit *before* anything is buffered, every read has a deadline, and every failure
(EOF, reset, oversized or truncated frame, timeout) is one typed error, so a
request/response handler can never wedge or raise anything unexpected.

Frame: unsigned LEB128 varint length (at most 5 bytes, minimal form) then the payload.
A prefix that breaks these rules or exceeds the limit is a `FrameViolation` (the peer
broke the protocol); every other failure is a plain `FrameError` (the stream broke).
"""

from __future__ import annotations

from typing import Protocol

import trio

MAX_VARINT_BYTES = 5
_READ_CHUNK = 1 << 16


class FrameError(Exception):
    """A frame could not be read or written: the stream is no longer usable."""


class FrameViolation(FrameError):
    """The peer broke the framing rules: a length prefix over the limit, non-minimal or
    longer than 5 bytes. Unlike EOF, reset or a timeout, only a misbehaving peer does this."""


class ByteStream(Protocol):
    """The part of a libp2p `INetStream` that framing needs."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


class FrameReader:
    """Reads frames from one stream, keeping bytes that arrived past a frame's end."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def _fill(self) -> None:
        try:
            chunk = await self._stream.read(_READ_CHUNK)
        except trio.Cancelled:
            raise
        except Exception as exc:  # EOF, reset, muxer errors: all end the stream for us
            raise FrameError(f"stream ended ({type(exc).__name__})") from None
        if not chunk:
            raise FrameError("stream ended (EOF)")
        self._buf += chunk

    async def _read_varint(self) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if len(self._buf) <= i:
                await self._fill()
            byte = self._buf[i]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i > 0 and byte == 0:
                    raise FrameViolation("non-minimal varint length prefix")
                del self._buf[: i + 1]
                return value
        raise FrameViolation("varint length prefix too long")

    async def read_frame(self, max_len: int, timeout_s: float) -> bytes:
        """One frame of at most `max_len` bytes within `timeout_s`, else `FrameError`."""
        with trio.move_on_after(timeout_s):
            length = await self._read_varint()
            if length > max_len:
                raise FrameViolation(f"frame of {length} bytes exceeds the limit of {max_len}")
            while len(self._buf) < length:
                await self._fill()
            frame = bytes(self._buf[:length])
            del self._buf[:length]
            return frame
        raise FrameError(f"no complete frame within {timeout_s} s")


async def write_frame(stream: ByteStream, payload: bytes, timeout_s: float) -> None:
    """Write one frame within `timeout_s` (a peer that stops reading cannot wedge us)."""
    with trio.move_on_after(timeout_s):
        try:
            await stream.write(encode_frame(payload))
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise FrameError(f"write failed ({type(exc).__name__})") from None
        return
    raise FrameError(f"write did not complete within {timeout_s} s")
