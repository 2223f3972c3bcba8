"""Frames on the byte link: header + payload + CRC-32, COBS-stuffed, 0x00-delimited.

Frame body (before stuffing), all integers little-endian:

    version u8 | type u8 | seq u16 | length u16 | payload[length] | crc32 u32

The CRC is CRC-32/ISO-HDLC (zlib.crc32: reflected poly 0xEDB88320, init and
final XOR 0xFFFFFFFF) over every byte before it. On the wire a frame is
``0x00 COBS(body) 0x00``: the leading delimiter flushes whatever garbage a
receiver has buffered. See PROTOCOL.md section 2.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import List, Optional

VERSION = 1
HEADER = struct.Struct("<BBHH")
HEADER_SIZE = HEADER.size  # 6
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE  # 10 bytes of body around the payload
MAX_PAYLOAD = 0xFFFF
DELIM = 0x00


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC, as zlib computes it."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00."""
    out = bytearray([0])
    code_at, code = 0, 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
            continue
        out.append(b)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> Optional[bytes]:
    """Inverse of cobs_encode; None when `data` is not valid COBS."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        if end > n:
            return None
        chunk = data[i + 1:end]
        if 0 in chunk:
            return None
        out += chunk
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def max_encoded_size(payload_len: int) -> int:
    """Bytes on the wire for a payload of `payload_len`, delimiters included (upper bound)."""
    body = payload_len + OVERHEAD
    return body + body // 254 + 1 + 2


@dataclass(frozen=True)
class Frame:
    """A decoded, CRC-checked frame."""

    type: int
    seq: int
    payload: bytes
    version: int = VERSION


def encode_body(ftype: int, seq: int, payload: bytes, version: int = VERSION) -> bytes:
    """The unstuffed frame body with its CRC."""
    if not 0 <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = HEADER.pack(version, ftype & 0xFF, seq & 0xFFFF, len(payload)) + bytes(payload)
    return head + struct.pack("<I", crc32(head))


def encode_frame(ftype: int, seq: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """Wire bytes of one frame: 0x00 COBS(body) 0x00."""
    return b"\x00" + cobs_encode(encode_body(ftype, seq, payload, version)) + b"\x00"


def decode_body(body: bytes) -> Optional[Frame]:
    """Parse an unstuffed body; None unless length and CRC are consistent."""
    if len(body) < OVERHEAD:
        return None
    version, ftype, seq, length = HEADER.unpack_from(body)
    if len(body) != OVERHEAD + length:
        return None
    (crc,) = struct.unpack_from("<I", body, len(body) - CRC_SIZE)
    if crc != crc32(body[:-CRC_SIZE]):
        return None
    return Frame(type=ftype, seq=seq, payload=bytes(body[HEADER_SIZE:-CRC_SIZE]), version=version)


@dataclass
class DecoderStats:
    """What a decoder saw: good frames and every kind of rejected segment."""

    frames: int = 0
    bytes: int = 0
    bad_cobs: int = 0
    bad_crc: int = 0        # also covers a length field that disagrees with the body
    overruns: int = 0       # segments longer than the receive buffer
    idle_resets: int = 0

    @property
    def resyncs(self) -> int:
        """Segments thrown away before the receiver found the next good delimiter."""
        return self.bad_cobs + self.bad_crc + self.overruns + self.idle_resets


class FrameDecoder:
    """Streaming decoder: feed any bytes, get the complete good frames.

    It never raises on input, keeps at most `max_payload + overhead` bytes
    buffered, and resynchronises at the next 0x00 after anything bad.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_stuffed = max_encoded_size(max_payload)
        self.buf = bytearray()
        self.overrun = False
        self.stats = DecoderStats()

    def reset(self) -> None:
        """Drop a partial frame (idle timeout)."""
        if self.buf or self.overrun:
            self.stats.idle_resets += 1
        self.buf.clear()
        self.overrun = False

    @property
    def in_frame(self) -> bool:
        """True while part of a frame is buffered."""
        return bool(self.buf) or self.overrun

    def feed(self, data: bytes) -> List[Frame]:
        out: List[Frame] = []
        self.stats.bytes += len(data)
        start = 0
        while True:
            end = data.find(b"\x00", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self.overrun:
                if len(self.buf) + len(piece) > self.max_stuffed:
                    self.overrun = True
                    self.buf.clear()
                else:
                    self.buf += piece
            if end < 0:
                return out
            frame = self._segment_done()
            if frame is not None:
                out.append(frame)
            start = end + 1

    def _segment_done(self) -> Optional[Frame]:
        seg, over = bytes(self.buf), self.overrun
        self.buf.clear()
        self.overrun = False
        if over:
            self.stats.overruns += 1
            return None
        if not seg:
            return None  # back-to-back delimiters are idle fill
        body = cobs_decode(seg)
        if body is None:
            self.stats.bad_cobs += 1
            return None
        frame = decode_body(body)
        if frame is None:
            self.stats.bad_crc += 1
            return None
        self.stats.frames += 1
        return frame
