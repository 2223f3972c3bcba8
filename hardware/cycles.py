"""RTL cycles of one digits_mlp training step, per phase, beside `edgetune simulate`'s cost model
(runtime/accel/cost.py, constraint design) for the same array and the same step's masks:

    python -m edgetune.hardware.cycles [--batch 32] [--fmax-mhz F] [--json OUT]

It runs the step on the simulated device (device_tb.v on Verilator: the firmware decodes the batch,
the array runs FP/BP/WG/update, the processor computes the loss), reads the device's counters and
costs every layer with layer_costs on the masks of that step, for an array of one row of L lanes
(what train_core is: one broadcast operand per cycle to all lanes) and for the spec's 16x16.
With --fmax-mhz it converts the step's cycles to steps per second at that clock.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PHASES = ("fp", "bp", "wg")


def model_cycles(model, x, y, lanes: int) -> dict:
    """{"1xL": {phase: compute cycles}, "16x16": {...}, "update": {...}} of the cost model for one step."""
    from edgetune.firmware_bridge.accel_model import SPEC
    from edgetune.runtime.accel.cost import Operands, layer_costs
    from edgetune.runtime.engines.dense import DenseEngine

    ref = DenseEngine()
    ref.load(model)
    _loss, _g, vals, dvals = ref.forward_backward_values(x, y)
    gemms = [n for n in model.nodes if n.op == "gemm"]
    out = {}
    for label, spec in (("1xL", {**SPEC, "pe_rows": 1, "pe_cols": lanes}), ("16x16", dict(SPEC))):
        tot = dict.fromkeys(PHASES, 0)
        for i, node in enumerate(gemms):
            ops = Operands.from_values(model, node, vals, dvals)
            need = {"fp": True, "bp": i > 0, "wg": True}
            cost = layer_costs(node, model.params[node.params["W"]].shape, ops, need, spec, designs=("constraint",),
                               eb=4)["constraint"]
            for ph in PHASES:
                tot[ph] += cost[ph]["compute_cycles"]
        n_train = sum(int(np.prod(model.params[k].shape)) for k in model.trainable_names())
        tot["update"] = -(-n_train // spec["pe_cols"])       # what accel_model charges for the update
        out[label] = tot
    return out


def run_rtl_step(batch: int) -> dict:
    """The device's READ_COUNTERS after one TRAIN_STEP of digits_mlp on the first `batch` samples."""
    from edgetune.firmware_bridge.codecs import encode_batch, encode_model_descriptor, state_to_tensor_set
    from edgetune.runtime import load_model
    from edgetune.runtime.optim import OptimizerConfig, make_optimizer
    from . import sim as S

    m = load_model("digits_mlp")
    cfg = OptimizerConfig(name="sgd", lr=0.02, momentum=0.9)
    d = np.load(ROOT / "models" / "digits_shifted.npz")
    x, y = d["x"][:batch].astype(np.float32), d["y"][:batch]
    case = {"desc": encode_model_descriptor(m, m.trainable_names(), cfg, "cross_entropy"),
            "state": state_to_tensor_set(m.params, make_optimizer(cfg).state_dict(), 0),
            "batch": encode_batch(x, y)}
    with tempfile.TemporaryDirectory() as tmp:
        inp, res = Path(tmp) / "case.pkl", Path(tmp) / "res.pkl"
        inp.write_bytes(pickle.dumps(case))
        os.environ.pop("PYTEST_CURRENT_TEST", None)
        S.run("device_tb", "verilator", "edgetune.hardware.cycles_bench", S.DEVICE_PARAMS, testcase="one_step",
              env={"EDGETUNE_CYC_CASE": str(inp), "EDGETUNE_CYC_RESULT": str(res)}, log_file=Path(tmp) / "sim.log")
        out = pickle.loads(res.read_bytes())
    out["model"], out["x"], out["y"] = m, x, y
    return out


def table(rtl: dict, mod: dict, lanes: int) -> str:
    last = rtl["counters"]["accelerator"]["last_step"]
    ph = last["phases"]
    rows = [("fp", ph["fp"]["cycles"]), ("bp", ph["bp"]["cycles"]), ("wg", ph["wg"]["cycles"]),
            ("update", last["update_cycles"])]
    lines = [f"| phase | RTL cycles (1x{lanes} array) | cost model, 1x{lanes}: compute cycles | RTL / model "
             "| cost model, 16x16 |", "|---|---|---|---|---|"]
    for name, cyc in rows:
        m1, m16 = mod["1xL"][name], mod["16x16"][name]
        lines.append(f"| {name} | {cyc} | {m1} | {cyc / m1:.2f} | {m16} |")
    lines.append(f"| input push (processor) | {last['input_cycles']} | - | - | - |")
    lines.append(f"| loss (processor + scalar FPU) | {last['loss_cycles']} | - | - | - |")
    lines.append(f"| whole TRAIN_STEP | {last['cycles']} | - | - | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgetune.hardware.cycles", description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--fmax-mhz", type=float, default=None, help="routed clock: steps per second at it")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from .sim import DEVICE_PARAMS

    lanes = int(DEVICE_PARAMS["L"])
    rtl = run_rtl_step(a.batch)
    mod = model_cycles(rtl["model"], rtl["x"], rtl["y"], lanes)
    print(table(rtl, mod, lanes))
    total = rtl["counters"]["accelerator"]["last_step"]["cycles"]
    if a.fmax_mhz:
        print(f"steps/s at {a.fmax_mhz} MHz: {a.fmax_mhz * 1e6 / total:.1f} (batch {a.batch}, {total} cycles a step)")
    if a.json:
        Path(a.json).write_text(json.dumps({"rtl": rtl["counters"], "model": mod}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
