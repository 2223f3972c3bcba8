"""Builds golden_frames.json: the frame vectors a firmware author tests a decoder against.

    python -m edgetune.firmware_bridge.golden            # rewrite golden_frames.json
    python -m edgetune.firmware_bridge.golden --check    # exit 1 if the file is stale

The file has two tables. "frames": one row per frame (type, seq, payload and the
exact wire bytes). "streams": byte streams (garbage, bad CRCs, back-to-back
frames, truncation) with the frames a correct decoder must output, in order.
"""
from __future__ import annotations

import json
import os
import struct
import sys

from . import protocol as P
from .framing import cobs_encode, crc32, encode_frame

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden_frames.json")
SESSION = 0x1234ABCD


def _frames():
    caps = {"format": "fp32", "max_payload": 1024, "pe_array": [16, 16]}
    chunk = bytes(range(1, 9))
    rows = [
        ("empty_payload", 0x30, 0, b""),
        ("hello_req", P.HELLO, 1, P.HELLO_REQ.pack(1, 0, 4096)),
        ("hello_rsp", P.HELLO | 0x80, 1, P.encode_hello_rsp(0xED6E7001, SESSION, 1024, caps)),
        ("put_chunk_req", P.PUT_CHUNK, 2, P.PUT_CHUNK_REQ.pack(SESSION, P.BLOB_BATCH, 16, 8, ) + chunk),
        ("put_chunk_rsp", P.PUT_CHUNK | 0x80, 2, P.PUT_CHUNK_RSP.pack(P.BLOB_BATCH, 8, 8)),
        ("commit_req", P.COMMIT, 3, P.COMMIT_REQ.pack(SESSION, P.BLOB_STATE, 16, crc32(bytes(16)))),
        ("commit_rsp", P.COMMIT | 0x80, 3, P.COMMIT_RSP.pack(P.BLOB_STATE, 0)),
        ("train_step_req", P.TRAIN_STEP, 4, P.TRAIN_STEP_REQ.pack(SESSION, 41, 580, 0xDEADBEEF)),
        ("train_step_rsp", P.TRAIN_STEP | 0x80, 4,
         P.TRAIN_STEP_RSP.pack(41, 0.6931471805599453, 3, 4, 0.001, 0.002, 0.0015, 0.0005, 123456)),
        ("predict_req", P.PREDICT, 5, P.BATCH_REQ.pack(SESSION, 580, 0xDEADBEEF)),
        ("predict_rsp", P.PREDICT | 0x80, 5, P.RESULT_RSP.pack(0.0, 160, 0x01020304)),
        ("read_state_req", P.READ_STATE, 6, P.READ_STATE_REQ.pack(SESSION, P.STATE_ALL)),
        ("get_chunk_req", P.GET_CHUNK, 7, P.GET_CHUNK_REQ.pack(SESSION, P.BLOB_RESULT, 0, 1024)),
        ("get_chunk_rsp", P.GET_CHUNK | 0x80, 7, P.GET_CHUNK_RSP.pack(0, 4) + b"\x00\x00\x80\x3f"),
        ("error_session", P.ERROR, 8, P.encode_error(P.E_SESSION, "session 0x1234abcd is not 0x00000002")),
        ("zeros_payload", 0x30, 9, bytes(10)),
        ("long_run_254", 0x30, 10, bytes(range(1, 255)) + bytes(range(1, 50))),
        ("seq_wrap", 0x30, 0xFFFF, b"\xff\x00\xff"),
    ]
    return [{"name": n, "type": t, "seq": s, "payload": p.hex(), "wire": encode_frame(t, s, p).hex()}
            for n, t, s, p in rows]


def _length_mismatch() -> bytes:
    """A body whose CRC is right but whose length field says 5 for a 3-byte payload."""
    head = struct.pack("<BBHH", 1, 0x30, 1, 5) + b"abc"
    return b"\x00" + cobs_encode(head + struct.pack("<I", crc32(head))) + b"\x00"


def _streams(frames):
    w = {f["name"]: bytes.fromhex(f["wire"]) for f in frames}
    a, b, c = w["hello_req"], w["train_step_rsp"], w["get_chunk_rsp"]
    flip = bytearray(b)
    flip[len(flip) // 2] ^= 0x10
    bad_crc_body = bytearray(c)
    bad_crc_body[-2] ^= 0x01            # last stuffed byte: the CRC's top byte
    rows = [
        ("back_to_back", a + b + c, ["hello_req", "train_step_rsp", "get_chunk_rsp"]),
        ("shared_delimiter", a[:-1] + b + c[1:], ["hello_req", "train_step_rsp", "get_chunk_rsp"]),
        ("leading_garbage", b"\x13\x37\xff\xfe garbage" + a, ["hello_req"]),
        ("garbage_between", a + b"\x01\x02\x03\x04\x05" + b, ["hello_req", "train_step_rsp"]),
        ("bit_flip_dropped", a + bytes(flip) + c, ["hello_req", "get_chunk_rsp"]),
        ("bad_crc_dropped", bytes(bad_crc_body) + a, ["hello_req"]),
        ("truncated_then_good", b[: len(b) // 2] + a, ["hello_req"]),
        ("idle_fill", b"\x00" * 8 + a + b"\x00" * 8, ["hello_req"]),
        ("too_short", b"\x00\x03\x01\x01\x00" + a, ["hello_req"]),
        ("length_mismatch", _length_mismatch() + c, ["get_chunk_rsp"]),
        ("only_garbage", bytes(range(1, 200)), []),
    ]
    return [{"name": n, "stream": s.hex(), "frames": f} for n, s, f in rows]


def build() -> dict:
    frames = _frames()
    return {"about": "edgetune firmware bridge golden frames; see PROTOCOL.md section 2. "
                     "wire = 0x00 COBS(version u8|type u8|seq u16le|len u16le|payload|crc32 le) 0x00",
            "protocol_version": P.PROTO_VERSION, "frames": frames, "streams": _streams(frames)}


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        with open(PATH) as f:
            ok = f.read() == text
        print("golden_frames.json is " + ("up to date" if ok else "STALE"))
        return 0 if ok else 1
    with open(PATH, "w") as f:
        f.write(text)
    print(PATH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
