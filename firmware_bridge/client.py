"""Host side of the protocol: reliable request/response, HELLO, chunked blob transfer.

Reliability (PROTOCOL.md section 4): every request gets a fresh 16-bit sequence
number; a timed-out or unanswered request is sent again with the *same* number
and bytes, with the per-attempt timeout doubling up to ``max_timeout``; answers
carrying another sequence number (late duplicates) are ignored.

Giving up is decided by silence, not by a count: a request fails with
DeviceNotRespondingError ("device stopped answering (last command ...)") once
the link has carried no valid frame for ``give_up_after`` seconds (plus the
command's usual duration). While valid frames keep arriving the link can still
make progress, so the client keeps retrying - a noisy link loses several
attempts in a row now and then, and a fixed number of attempts at one command
made such runs give up on a live device. Two bounds keep "nothing waits
forever": a device that answers only with other frames fails after
STALE_LIMIT times the silence budget, and an explicit ``retries`` still caps
the attempts (tests use it; the default is no cap).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, asdict, field
from typing import Callable, Dict, Optional

from . import protocol as P
from .errors import (DeviceErrorResponse, DeviceNotRespondingError, IoTimeoutError, ProtocolError,
                     SessionChangedError)
from .framing import FrameDecoder, crc32, encode_frame
from .transport import Transport

COMPUTE_COMMANDS = (P.COMMIT, P.TRAIN_STEP, P.PREDICT, P.LOSS_GRADS, P.READ_STATE, P.READ_COUNTERS)

# Timeouts in seconds (named so that a slower device, e.g. a simulated one, can scale them).
DEFAULT_TIMEOUT = 0.5        # first attempt's wait, beyond the wire time and the command's usual duration
DEFAULT_MAX_TIMEOUT = 8.0    # the per-attempt wait doubles up to this
DEFAULT_RETRIES = None       # no cap on attempts: the silence rule decides
DEFAULT_GIVE_UP = 10.0       # silence after which a request fails, beyond its usual duration
STALE_LIMIT = 6              # x the silence budget: a request answered only by other frames fails
# Every wait is at most 1/8 of the silence budget, so a request is sent at least 8 times before the
# device counts as silent: at 5% frame faults each way an attempt fails 1 time in 10, eight in a
# row 1 in 10^8. Retrying before a slow step ends costs a small frame; the device answers it from
# its response cache (PROTOCOL.md section 4).
ATTEMPTS_PER_SILENCE = 8


@dataclass
class LinkStats:
    bytes_up: int = 0
    bytes_down: int = 0
    frames_up: int = 0
    frames_down: int = 0
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    stale_frames: int = 0
    resyncs: int = 0
    error_frames: int = 0
    seconds: float = 0.0
    per_command: Dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["frames"] = self.frames_up + self.frames_down
        return d


TIMEOUT_SCALE_ENV = "EDGETUNE_DEVICE_TIMEOUT_SCALE"


def _scale_from_env() -> Optional[float]:
    raw = os.environ.get(TIMEOUT_SCALE_ENV)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        from ..runtime.errors import UsageError

        raise UsageError(f"{TIMEOUT_SCALE_ENV} must be a positive number, got {raw!r}")
    return value


class DeviceClient:
    """One device session over a Transport.

    `timeout_scale` multiplies every wall-clock timeout (attempt, cap and write): a device
    simulated in RTL runs its UART thousands of times slower than a board. None means: the
    EDGETUNE_DEVICE_TIMEOUT_SCALE environment variable if set, else the `link_timeout_scale`
    the device states in its HELLO capabilities (PROTOCOL.md section 5), else 1.
    `clock` is the time source of every deadline (time.monotonic; tests pass a simulated one).
    """

    def __init__(self, transport: Transport, timeout: float = DEFAULT_TIMEOUT, retries: Optional[int] = DEFAULT_RETRIES,
                 max_timeout: float = DEFAULT_MAX_TIMEOUT, baudrate: int = 921600, max_payload: int = 4096,
                 give_up_after: float = DEFAULT_GIVE_UP, timeout_scale: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        for name, value in (("timeout", timeout), ("max_timeout", max_timeout), ("give_up_after", give_up_after)):
            if value is None or not value > 0:
                raise ValueError(f"{name} must be positive seconds, got {value!r}")
        if timeout_scale is None:
            timeout_scale = _scale_from_env()
        if timeout_scale is not None and not (math.isfinite(timeout_scale) and timeout_scale > 0):
            raise ValueError(f"timeout_scale must be a positive number, got {timeout_scale!r}")
        self.scale_fixed = timeout_scale is not None
        self.scale = float(timeout_scale or 1.0)
        self.t, self.timeout, self.retries, self.max_timeout = transport, timeout, retries, max_timeout
        self.give_up_after = give_up_after
        self.clock = clock     # the deadlines' time source (tests inject one that the transport advances)
        self.baudrate, self.host_max_payload = baudrate, max_payload
        self.decoder = FrameDecoder()
        self.seq = 0
        self.stats = LinkStats()
        self.session: Optional[int] = None
        self.info: dict = {}
        self.rtt: Dict[int, float] = {}
        self.heard = clock()       # when the last valid frame arrived (the silence rule's start)

    # -- request/response ----------------------------------------------------
    def _wire_seconds(self, nbytes: int) -> float:
        return nbytes * 10.0 / self.baudrate

    def request(self, ftype: int, payload: bytes, expect_bytes: int = 64) -> bytes:
        """Send one request and return the payload of its response (retrying as needed)."""
        self.seq = (self.seq + 1) & 0xFFFF
        seq, wire = self.seq, encode_frame(ftype, self.seq, payload)
        name = P.command_name(ftype)
        pc = self.stats.per_command.setdefault(name, {"requests": 0, "retries": 0, "bytes_up": 0})
        self.stats.requests += 1
        pc["requests"] += 1
        t_start = self.clock()
        usual = self._wire_seconds(len(wire) + expect_bytes + 16)
        if ftype in COMPUTE_COMMANDS:
            usual += 3.0 * self.rtt.get(ftype, 0.0)
        base = (self.timeout + usual) * self.scale
        budget = (self.give_up_after + usual) * self.scale     # silence the link may keep
        self.heard = t_start
        attempts = 0
        try:
            while True:
                now = self.clock()
                silent = now - self.heard
                if silent >= budget or now - t_start >= STALE_LIMIT * budget or (
                        self.retries is not None and attempts > self.retries):
                    break
                if attempts:
                    self.stats.retries += 1
                    pc["retries"] += 1
                try:
                    self.t.write(wire, timeout_sec=max(1.0, self._wire_seconds(len(wire)) * 2) * self.scale)
                except IoTimeoutError:
                    pass        # a device that reads nothing fills the line: a lost attempt, silence decides
                else:
                    self.stats.bytes_up += len(wire)
                    self.stats.frames_up += 1
                    pc["bytes_up"] += len(wire)
                t_sent = self.clock()
                wait = min(base * 2.0 ** min(attempts, 30), max(self.max_timeout * self.scale, base),
                           budget / ATTEMPTS_PER_SILENCE, max(budget - (t_sent - self.heard), 0.01))
                attempts += 1
                frame = self._await(seq, wait)
                if frame is not None:
                    # the round trip of the attempt that was answered: a request that needed several
                    # attempts must not stretch the next one's first wait (and so its give-up time)
                    rtt = self.clock() - t_sent
                    self.rtt[ftype] = rtt if ftype not in self.rtt else 0.7 * self.rtt[ftype] + 0.3 * rtt
                    return self._check(frame, ftype, name)
                self.stats.timeouts += 1
        finally:
            self.stats.seconds += self.clock() - t_start
            self.stats.resyncs = self.decoder.stats.resyncs
        raise DeviceNotRespondingError(self._give_up_text(name, seq, t_start, attempts))

    def _give_up_text(self, name: str, seq: int, t_start: float, attempts: int) -> str:
        now, where = self.clock(), self.t.url or "the link"
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if self.heard > t_start:
            return (f"device stopped answering (last command {name}, seq {seq}: no valid frame for "
                    f"{now - self.heard:.1f} s; only other frames in {now - t_start:.1f} s, {tries}) on {where}")
        return (f"device stopped answering (last command {name}, seq {seq}: no valid frame for "
                f"{now - t_start:.1f} s, {tries}) on {where}")

    def _await(self, seq: int, timeout: float):
        deadline = self.clock() + timeout
        while True:
            left = deadline - self.clock()
            if left <= 0:
                return None
            try:
                data = self.t.read(65536, timeout_sec=left)
            except IoTimeoutError:
                return None
            self.stats.bytes_down += len(data)
            found = None
            for f in self.decoder.feed(data):
                if f.type & P.RESPONSE_BIT:        # a valid frame from the device: it and the link are alive
                    self.heard = self.clock()
                self.stats.frames_down += 1
                if f.seq == seq and found is None and (f.type & P.RESPONSE_BIT):
                    found = f
                else:
                    self.stats.stale_frames += 1
            if found is not None:
                return found

    def _check(self, frame, ftype: int, name: str) -> bytes:
        if frame.version != P.PROTO_VERSION:
            raise ProtocolError(f"device answered {name} with protocol version {frame.version}")
        if frame.type == P.ERROR:
            self.stats.error_frames += 1
            code, text = P.decode_error(frame.payload)
            cls = SessionChangedError if code in (P.E_SESSION,) else DeviceErrorResponse
            raise cls(code, text, name)
        if frame.type != (ftype | P.RESPONSE_BIT):
            raise ProtocolError(f"device answered {name} with message type 0x{frame.type:02x}")
        return frame.payload

    # -- handshake -------------------------------------------------------------
    def hello(self) -> dict:
        rsp = self.request(P.HELLO, P.HELLO_REQ.pack(P.PROTO_VERSION, 0, self.host_max_payload), 2048)
        try:
            info = P.decode_hello_rsp(rsp)
        except Exception as exc:  # noqa: BLE001
            raise ProtocolError(f"malformed HELLO answer: {exc}") from None
        if info["proto"] != P.PROTO_VERSION:
            raise ProtocolError(f"device speaks protocol {info['proto']}, host speaks {P.PROTO_VERSION}")
        self.session, self.info = info["session_id"], info
        hint = info["caps"].get("link_timeout_scale") if isinstance(info["caps"], dict) else None
        if not self.scale_fixed and isinstance(hint, (int, float)) and math.isfinite(hint) and hint > 0:
            self.scale = float(hint)
        self.max_payload = min(info["max_payload"], self.host_max_payload)
        return info

    def _sess(self) -> bytes:
        if self.session is None:
            raise ProtocolError("HELLO first")
        return P.SESSION.pack(self.session)

    # -- bulk ----------------------------------------------------------------------
    def put_blob(self, blob: int, data: bytes) -> None:
        """Upload `data` to staging buffer `blob` in acknowledged chunks."""
        room = self.max_payload - P.PUT_CHUNK_REQ.size
        total, off = len(data), 0
        while True:
            piece = data[off:off + room]
            rsp = self.request(P.PUT_CHUNK, P.PUT_CHUNK_REQ.pack(self.session or 0, blob, total, off) + piece)
            rblob, roff, rlen = P.PUT_CHUNK_RSP.unpack_from(rsp)
            if (rblob, roff, rlen) != (blob, off, len(piece)):
                raise ProtocolError(f"PUT_CHUNK ack {rblob}/{roff}+{rlen} for {blob}/{off}+{len(piece)}")
            off += len(piece)
            if off >= total:
                return

    def commit(self, blob: int, data: bytes) -> int:
        """Upload and commit a MODEL or STATE blob; returns the device's step counter."""
        self.put_blob(blob, data)
        rsp = self.request(P.COMMIT, P.COMMIT_REQ.pack(self.session or 0, blob, len(data), crc32(data)))
        return P.COMMIT_RSP.unpack_from(rsp)[1]

    def read_result(self, total: int, crc: int) -> bytes:
        """Download the device's RESULT blob in chunks and check its CRC."""
        out = bytearray()
        room = self.max_payload - P.GET_CHUNK_RSP.size
        while len(out) < total:
            rsp = self.request(P.GET_CHUNK, P.GET_CHUNK_REQ.pack(self.session or 0, P.BLOB_RESULT, len(out),
                                                                 room), room + 32)
            off, rtotal = P.GET_CHUNK_RSP.unpack_from(rsp)
            data = rsp[P.GET_CHUNK_RSP.size:]
            if off != len(out) or rtotal != total or not data:
                raise ProtocolError(f"GET_CHUNK answered offset {off}/{rtotal}, wanted {len(out)}/{total}")
            out += data
        if crc32(out) != crc:
            raise ProtocolError("downloaded result does not match its CRC")
        return bytes(out)

    def result_request(self, ftype: int, payload: bytes):
        """A command whose answer is (loss, RESULT blob); returns (loss, blob bytes)."""
        rsp = self.request(ftype, payload)
        loss, total, crc = P.RESULT_RSP.unpack_from(rsp)
        return loss, self.read_result(total, crc)

    def link_stats(self) -> dict:
        self.stats.resyncs = self.decoder.stats.resyncs
        return self.stats.as_dict()
