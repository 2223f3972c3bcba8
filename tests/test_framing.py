"""Frame codec: golden vectors (whole and byte by byte), garbage, bad CRCs, fuzzing."""
import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from edgetune.firmware_bridge import golden
from edgetune.firmware_bridge.framing import (FrameDecoder, cobs_decode, cobs_encode, encode_frame,
                                              max_encoded_size)

with open(golden.PATH) as _f:
    GOLDEN = json.load(_f)
FRAMES = {f["name"]: f for f in GOLDEN["frames"]}


def ref_crc32(data: bytes) -> int:
    """Bit-by-bit CRC-32/ISO-HDLC, independent of zlib."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def ref_unstuff(seg: bytes) -> bytes:
    """Textbook COBS decoding, independent of the module under test."""
    out, i = bytearray(), 0
    while i < len(seg):
        code = seg[i]
        out += seg[i + 1:i + code]
        i += code
        if code < 0xFF and i < len(seg):
            out.append(0)
    return bytes(out)


def as_tuple(f):
    return (f.type, f.seq, f.payload)


def expected(row):
    return (row["type"], row["seq"], bytes.fromhex(row["payload"]))


def test_golden_file_is_current():
    with open(golden.PATH) as f:
        assert f.read() == golden.render(), "run python -m edgetune.firmware_bridge.golden"


@pytest.mark.parametrize("row", GOLDEN["frames"], ids=lambda r: r["name"])
def test_golden_frame_layout(row):
    wire = bytes.fromhex(row["wire"])
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    body = ref_unstuff(wire[1:-1])
    payload = bytes.fromhex(row["payload"])
    assert body[:6] == struct.pack("<BBHH", 1, row["type"], row["seq"], len(payload))
    assert body[6:-4] == payload
    assert struct.unpack("<I", body[-4:])[0] == ref_crc32(body[:-4])
    assert encode_frame(row["type"], row["seq"], payload) == wire


@pytest.mark.parametrize("row", GOLDEN["frames"], ids=lambda r: r["name"])
def test_golden_frame_decodes_whole_and_bytewise(row):
    wire = bytes.fromhex(row["wire"])
    assert [as_tuple(f) for f in FrameDecoder().feed(wire)] == [expected(row)]
    dec, got = FrameDecoder(), []
    for i in range(len(wire)):
        got += dec.feed(wire[i:i + 1])
    assert [as_tuple(f) for f in got] == [expected(row)]


@pytest.mark.parametrize("row", GOLDEN["streams"], ids=lambda r: r["name"])
def test_golden_streams(row):
    stream = bytes.fromhex(row["stream"])
    want = [expected(FRAMES[n]) for n in row["frames"]]
    assert [as_tuple(f) for f in FrameDecoder().feed(stream)] == want
    dec, got = FrameDecoder(), []
    for i in range(len(stream)):
        got += dec.feed(stream[i:i + 1])
    assert [as_tuple(f) for f in got] == want


def test_bad_segments_are_counted_as_resyncs():
    s = GOLDEN["streams"]
    dec = FrameDecoder()
    for name in ("bit_flip_dropped", "bad_crc_dropped", "garbage_between"):
        dec.feed(bytes.fromhex(next(r for r in s if r["name"] == name)["stream"]))
    assert dec.stats.resyncs == 3


def test_overrun_is_bounded_and_recovers():
    dec = FrameDecoder(max_payload=64)
    good = encode_frame(0x01, 7, b"ok")
    assert dec.feed(b"\x00" + b"\x55" * 10_000) == []
    assert len(dec.buf) <= max_encoded_size(64)
    assert [as_tuple(f) for f in dec.feed(good)] == [(0x01, 7, b"ok")]
    assert dec.stats.overruns == 1


def test_idle_reset_drops_partial_frame():
    dec = FrameDecoder()
    wire = encode_frame(0x02, 1, b"abc")
    dec.feed(wire[:5])
    assert dec.in_frame
    dec.reset()
    assert dec.stats.idle_resets == 1 and not dec.in_frame
    # the tail alone is not a frame; the next whole frame is
    assert dec.feed(wire[5:]) == []
    assert len(dec.feed(wire)) == 1


@given(st.binary(max_size=3000))
def test_cobs_roundtrip(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data
    assert len(enc) <= len(data) + len(data) // 254 + 1


# -- fuzzing: no crash, no hang, never a wrong frame ----------------------------
frame_st = st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=600))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_all(data: bytes, splits):
    dec, out = FrameDecoder(max_payload=1024), []
    pos = 0
    for s in sorted(splits):
        out += dec.feed(data[pos:s])
        pos = max(pos, s)
    out += dec.feed(data[pos:])
    assert len(dec.buf) <= max_encoded_size(1024)
    return out


@FUZZ
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4100), max_size=8), frame_st)
def test_fuzz_garbage_then_frame_resynchronises(garbage, splits, frame):
    # random bytes contain a CRC-valid frame with probability ~2**-32 per segment: none expected
    got = [as_tuple(f) for f in _decode_all(garbage + encode_frame(*frame), splits)]
    assert got == [(frame[0], frame[1], bytes(frame[2]))]


def mutate(wire: bytearray, kind: str, data, most: int) -> None:
    """Apply 1..most line faults of one kind to wire, in place, positions drawn from data (also
    used by the RTL decoder's differential fuzz, hardware/rtl/test_link_framing.py)."""
    for _ in range(data.draw(st.integers(1, most))):
        if kind == "none" or not wire:
            return
        i = data.draw(st.integers(0, len(wire) - 1))
        if kind == "flip":
            wire[i] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "drop":
            del wire[i]
        elif kind == "dup":
            wire.insert(i, wire[i])
        elif kind == "truncate":
            del wire[i:]                 # an open frame: a decoder's idle gap must drop it
        elif kind == "insert":
            wire.insert(i, data.draw(st.integers(0, 255)))
        elif kind == "garbage":
            wire[i:i] = data.draw(st.binary(min_size=1, max_size=40))
        else:
            raise ValueError(kind)


@FUZZ
@given(st.lists(frame_st, min_size=1, max_size=4), st.data())
def test_fuzz_mutations_never_accept_a_wrong_frame(frames, data):
    wire = bytearray(b"".join(encode_frame(*f) for f in frames))
    mutate(wire, data.draw(st.sampled_from(["flip", "drop", "dup", "truncate", "insert"])), data, 4)
    splits = data.draw(st.lists(st.integers(0, len(wire)), max_size=6))
    got = [as_tuple(f) for f in _decode_all(bytes(wire), splits)]
    originals = [(t, s, bytes(p)) for t, s, p in frames]
    for g in got:
        assert g in originals, "decoder accepted a frame that was never sent"
    # order is preserved and nothing is invented: got is a subsequence of originals
    it = iter(originals)
    assert all(any(g == o for o in it) for g in got)


@FUZZ
@given(st.lists(frame_st, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=10))
def test_fuzz_clean_stream_any_split_decodes_everything(frames, splits):
    wire = b"".join(encode_frame(*f) for f in frames)
    got = [as_tuple(f) for f in _decode_all(wire, [s % (len(wire) + 1) for s in splits])]
    assert got == [(t, s, bytes(p)) for t, s, p in frames]


def test_protocol_md_documents_every_type_and_error_code():
    from edgetune.firmware_bridge import protocol as P

    with open(os.path.join(os.path.dirname(golden.PATH), "PROTOCOL.md")) as f:
        doc = f.read()
    for t, name in P.COMMANDS.items():
        assert f"| 0x{t:02x} | {name} | 0x{t | 0x80:02X} |" in doc, name
    for code, name in P.ERROR_NAMES.items():
        assert f"| 0x{code:02X} | {name} |" in doc, name
    # the fixed sizes PROTOCOL.md section 6 states
    sizes = {"HELLO_REQ": 4, "HELLO_RSP": 16, "PUT_CHUNK_REQ": 16, "PUT_CHUNK_RSP": 12, "COMMIT_REQ": 16,
             "COMMIT_RSP": 8, "TRAIN_STEP_REQ": 16, "TRAIN_STEP_RSP": 44, "BATCH_REQ": 12, "RESULT_RSP": 16,
             "READ_STATE_REQ": 8, "GET_CHUNK_REQ": 16, "GET_CHUNK_RSP": 8}
    assert {k: getattr(P, k).size for k in sizes} == sizes
