"""Message types, error codes and the fixed payload layouts (PROTOCOL.md sections 3-6).

Requests use types 0x01..0x7E; the response to request T has type T | 0x80;
0xFF is the ERROR response. Every request except HELLO starts its payload with
the u32 session id the host got from HELLO. Integers are little-endian.
"""
from __future__ import annotations

import json
import struct

PROTO_VERSION = 1
RESPONSE_BIT = 0x80

# -- message types -----------------------------------------------------------
HELLO = 0x01
PUT_CHUNK = 0x02
COMMIT = 0x03
TRAIN_STEP = 0x10
PREDICT = 0x11
LOSS_GRADS = 0x12
READ_STATE = 0x20
GET_CHUNK = 0x21
READ_COUNTERS = 0x22
ERROR = 0xFF

COMMANDS = {HELLO: "HELLO", PUT_CHUNK: "PUT_CHUNK", COMMIT: "COMMIT", TRAIN_STEP: "TRAIN_STEP",
            PREDICT: "PREDICT", LOSS_GRADS: "LOSS_GRADS", READ_STATE: "READ_STATE",
            GET_CHUNK: "GET_CHUNK", READ_COUNTERS: "READ_COUNTERS"}

# -- blobs (bulk buffers on the device) ----------------------------------------
BLOB_MODEL = 1    # upload: model descriptor (JSON)
BLOB_STATE = 2    # upload: tensor set of parameters / optimizer state
BLOB_BATCH = 3    # upload: one batch (compressed activations + labels)
BLOB_RESULT = 8   # download: the answer of the last PREDICT/LOSS_GRADS/READ_*
UPLOAD_BLOBS = (BLOB_MODEL, BLOB_STATE, BLOB_BATCH)

# -- error codes -------------------------------------------------------------
E_UNKNOWN_TYPE = 0x01
E_BAD_PAYLOAD = 0x02
E_SESSION = 0x03
E_NO_MODEL = 0x04
E_TOO_LARGE = 0x05
E_BAD_CHUNK = 0x06
E_BLOB_CRC = 0x07
E_BAD_DESCRIPTOR = 0x08
E_STEP = 0x09
E_BAD_STATE = 0x0A
E_NO_RESULT = 0x0B
E_VERSION = 0x0C
E_BAD_BATCH = 0x0D
E_INTERNAL = 0x7F

ERROR_NAMES = {E_UNKNOWN_TYPE: "UNKNOWN_TYPE", E_BAD_PAYLOAD: "BAD_PAYLOAD", E_SESSION: "SESSION_MISMATCH",
               E_NO_MODEL: "NO_MODEL", E_TOO_LARGE: "TOO_LARGE", E_BAD_CHUNK: "BAD_CHUNK",
               E_BLOB_CRC: "BLOB_CRC", E_BAD_DESCRIPTOR: "BAD_DESCRIPTOR", E_STEP: "STEP_MISMATCH",
               E_BAD_STATE: "BAD_STATE", E_NO_RESULT: "NO_RESULT", E_VERSION: "UNSUPPORTED_VERSION",
               E_BAD_BATCH: "BAD_BATCH", E_INTERNAL: "INTERNAL"}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"E_{code:02X}")


def command_name(ftype: int) -> str:
    return COMMANDS.get(ftype & ~RESPONSE_BIT, f"0x{ftype:02x}")


# -- fixed layouts -------------------------------------------------------------
HELLO_REQ = struct.Struct("<BBH")                 # host proto version, flags, max payload host accepts
HELLO_RSP = struct.Struct("<BBHIIH2x")            # proto, flags, rsv, device_id, session_id, max_payload; + caps JSON
SESSION = struct.Struct("<I")
PUT_CHUNK_REQ = struct.Struct("<IB3xII")         # session, blob, total, offset; + data
PUT_CHUNK_RSP = struct.Struct("<B3xII")          # blob, offset, length stored
COMMIT_REQ = struct.Struct("<IB3xII")            # session, blob, total, crc32
COMMIT_RSP = struct.Struct("<B3xI")              # blob, device step counter after the commit
TRAIN_STEP_REQ = struct.Struct("<IIII")          # session, step, batch total, batch crc32
TRAIN_STEP_RSP = struct.Struct("<IdIIffffQ")     # step done, loss f64, correct, batch, fp/bp/wg/update s, cycles
BATCH_REQ = struct.Struct("<III")                # session, batch total, batch crc32 (PREDICT, LOSS_GRADS)
RESULT_RSP = struct.Struct("<dII")               # loss f64 (0 if none), result total, result crc32
READ_STATE_REQ = struct.Struct("<IB3x")          # session, what (1 = params + optimizer state)
GET_CHUNK_REQ = struct.Struct("<IB3xIH2x")       # session, blob, offset, max length
GET_CHUNK_RSP = struct.Struct("<II")             # offset, result total; + data
ERROR_RSP = struct.Struct("<H")                  # code; + UTF-8 text

STATE_ALL = 1


def encode_error(code: int, text: str) -> bytes:
    return ERROR_RSP.pack(code) + text.encode("utf-8", "replace")[:480]


def decode_error(payload: bytes):
    if len(payload) < ERROR_RSP.size:
        return E_INTERNAL, "short ERROR frame"
    (code,) = ERROR_RSP.unpack_from(payload)
    return code, payload[ERROR_RSP.size:].decode("utf-8", "replace")


def encode_hello_rsp(device_id: int, session_id: int, max_payload: int, caps: dict) -> bytes:
    return HELLO_RSP.pack(PROTO_VERSION, 0, 0, device_id, session_id, max_payload) + \
        json.dumps(caps, separators=(",", ":"), sort_keys=True).encode()


def decode_hello_rsp(payload: bytes) -> dict:
    proto, _flags, _rsv, device_id, session_id, max_payload = HELLO_RSP.unpack_from(payload)
    caps = json.loads(payload[HELLO_RSP.size:].decode())
    return {"proto": proto, "device_id": device_id, "session_id": session_id,
            "max_payload": max_payload, "caps": caps}
