"""cocotb module behind `python -m edgetune.hardware.cycles`: loads a model and its state into the
simulated device through its link, runs one TRAIN_STEP and reads the device's counters."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import cocotb

from edgetune.firmware_bridge import protocol as P
from edgetune.hardware.device_bridge import BenchHost, DeviceBench
from edgetune.hardware.sim import params_from_env


@cocotb.test()
async def one_step(dut):
    case = pickle.loads(Path(os.environ["EDGETUNE_CYC_CASE"]).read_bytes())
    bench = DeviceBench(dut, params_from_env())
    await bench.reset()
    host = BenchHost(bench)
    await host.hello()
    for blob, data in ((P.BLOB_MODEL, case["desc"]), (P.BLOB_STATE, case["state"])):
        err, _p = await host.commit(blob, data)
        assert err is None, err
    err, rsp = await host.train(0, case["batch"])
    assert err is None, err
    _loss, blob = await host.result(P.READ_COUNTERS, P.SESSION.pack(host.session))
    Path(os.environ["EDGETUNE_CYC_RESULT"]).write_bytes(pickle.dumps(
        {"counters": json.loads(blob), "train_step": P.TRAIN_STEP_RSP.unpack(rsp)}))
