"""The client's retry and give-up schedule on a simulated clock (issue 15, item 9): what the
link tests used to read off the wall clock (a silent device fails after give_up_after, not after
48 s of doubling retries) is checked here exactly, whatever the machine's load. The silence rule
itself (issue 22) is tested in test_link_give_up.py."""
import pytest

from edgetune.firmware_bridge import protocol as P
from edgetune.firmware_bridge.client import DeviceClient
from edgetune.firmware_bridge.errors import DeviceNotRespondingError, IoTimeoutError
from edgetune.firmware_bridge.framing import encode_frame
from edgetune.firmware_bridge.transport import Transport
from helpers import SimClockTransport


class SilentLink(SimClockTransport, Transport):
    """A link to a device that never answers; waiting on it advances the simulated clock."""

    url = "sim://silent"

    def __init__(self):
        self.now, self.writes = 0.0, []

    def write(self, data, timeout_sec):
        self.writes.append(self.now)

    def read(self, n, timeout_sec):
        self.now += timeout_sec
        raise IoTimeoutError("nothing arrived")

    def reset_input(self):
        pass


@pytest.mark.parametrize("give_up,timeout,max_timeout", [(10.0, 0.5, 8.0), (1.0, 0.2, 8.0), (30.0, 0.5, 2.0)])
def test_a_silent_device_fails_at_the_give_up_deadline(give_up, timeout, max_timeout):
    """(An explicit retries=8 caps the attempts: with 30 s and a 2 s cap they run out first, at 15.6 s.)"""
    link = SilentLink()
    c = DeviceClient(link, timeout=timeout, retries=8, max_timeout=max_timeout, give_up_after=give_up,
                     timeout_scale=1.0, clock=link.clock)
    with pytest.raises(DeviceNotRespondingError) as err:
        c.hello()
    # the wire time of HELLO and of its answer allowance (2048 bytes), tiny beside the budget
    wire = encode_frame(P.HELLO, 1, P.HELLO_REQ.pack(P.PROTO_VERSION, 0, c.host_max_payload))
    usual = c._wire_seconds(len(wire) + 2048 + 16)
    # the schedule: waits doubling from the first, capped at max_timeout, at an eighth of the
    # silence budget and at the silence left; it ends when the device stayed silent for the budget
    # or after retries + 1 attempts, whichever comes first
    deadline, waits, t = give_up + usual, [], 0.0
    while t < deadline - 1e-9 and len(waits) < 9:
        w = min((timeout + usual) * 2 ** len(waits), max(max_timeout, timeout + usual), deadline / 8, deadline - t)
        waits.append(w)
        t += w
    assert link.now == pytest.approx(t, abs=1e-6) and link.now <= deadline + 1e-9
    assert link.writes == pytest.approx([sum(waits[:i]) for i in range(len(waits))], abs=1e-6)
    assert c.stats.retries == len(waits) - 1
    assert f"no valid frame for {t:.1f} s, {len(waits)} attempts) on sim://silent" in str(err.value)
