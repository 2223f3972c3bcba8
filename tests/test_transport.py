"""Transports: the written contract, typed errors, and the emulator behind a real pty / TCP."""
import os
import socket
import subprocess
import sys
import threading

import pytest

from edgetune.firmware_bridge.client import DeviceClient
from edgetune.firmware_bridge.errors import (DeviceError, DeviceNotRespondingError, IoTimeoutError,
                                             TransportClosedError)
from edgetune.firmware_bridge.transport import SerialTransport, read_exact


def test_timeouts_must_be_explicit_and_finite():
    t = SerialTransport("loop://")
    t.open()
    try:
        for bad in (None, 0, -1, float("inf"), float("nan"), "1"):
            with pytest.raises(ValueError):
                t.read(1, bad)
            with pytest.raises(ValueError):
                t.write(b"x", bad)
    finally:
        t.close()


def test_loop_roundtrip_and_timeout():
    with SerialTransport("loop://") as t:
        t.write(b"hello world", 1.0)
        assert read_exact(t, 11, 1.0) == b"hello world"
        with pytest.raises(IoTimeoutError):
            t.read(10, 0.05)
        with pytest.raises(TimeoutError):       # IoTimeoutError is also a TimeoutError
            read_exact(t, 1, 0.05)


def test_closed_and_unopenable():
    t = SerialTransport("loop://")
    with pytest.raises(TransportClosedError):
        t.read(1, 0.1)
    t.open()
    t.close()
    t.close()                                   # idempotent
    with pytest.raises(TransportClosedError):
        t.write(b"x", 0.1)
    with pytest.raises(TransportClosedError):
        SerialTransport("/dev/edgetune-no-such-tty").open()
    assert issubclass(TransportClosedError, DeviceError)


def test_socket_url_and_peer_close():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def peer():
        c, _ = srv.accept()
        c.sendall(c.recv(5))
        c.close()

    th = threading.Thread(target=peer, daemon=True)
    th.start()
    with SerialTransport(f"socket://127.0.0.1:{srv.getsockname()[1]}") as t:
        t.write(b"abcde", 1.0)
        assert read_exact(t, 5, 2.0) == b"abcde"
        th.join(2.0)
        with pytest.raises(TransportClosedError):
            t.read(1, 1.0)
    srv.close()


def test_client_gives_up_with_typed_error_on_silent_link():
    with SerialTransport("loop://") as t:
        # loop:// echoes the request back; a request is never a valid answer
        c = DeviceClient(t, timeout=0.05, retries=2, max_timeout=0.1)
        with pytest.raises(DeviceNotRespondingError, match=r"device stopped answering \(last command HELLO, "
                                                           r"seq 1: .*, 3 attempts\) on loop://"):
            c.hello()
        assert c.stats.retries == 2 and c.stats.stale_frames == 3


def _spawn(*args):
    p = subprocess.Popen([sys.executable, "-m", "edgetune.firmware_bridge.emulator", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = p.stdout.readline().decode()
    return p, line


def _stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
    p.stdout.close()
    p.stderr.close()


def test_emulator_behind_a_real_pty():
    p, line = _spawn("--pty")
    try:
        path = line.rstrip("\n")
        assert line.endswith("\n") and path.startswith("/dev/") and " " not in path
        assert os.path.exists(path)
        with SerialTransport(path, baudrate=115200) as t:
            c = DeviceClient(t, timeout=1.0)
            info = c.hello()
            assert info["caps"]["device"] == "edgetune-emulator" and info["session_id"] != 0
            # garbage on the line does not disturb the next request
            t.write(b"\x11\x22\x33noise\x00\x01\x02", 1.0)
            assert c.hello()["session_id"] == info["session_id"]
        # a second client (host restart) gets the same device session
        with SerialTransport(path) as t:
            assert DeviceClient(t, timeout=1.0).hello()["session_id"] == info["session_id"]
    finally:
        _stop(p)
    assert p.returncode == 0


def test_emulator_over_tcp_binds_loopback():
    p, line = _spawn("--tcp", ":0")
    try:
        url = line.strip()
        assert url.startswith("socket://127.0.0.1:")
        with SerialTransport(url) as t:
            assert DeviceClient(t, timeout=1.0).hello()["proto"] == 1
    finally:
        _stop(p)


def test_emulator_bad_option_is_one_line_error():
    p = subprocess.run([sys.executable, "-m", "edgetune.firmware_bridge.emulator", "--fault-rate", "2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and p.stdout == ""
    assert p.stderr.strip().startswith("error:") and "Traceback" not in p.stderr
