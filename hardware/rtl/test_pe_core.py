"""pe_core.v: FP, BP and WG of a gemm layer of digits_mlp, a 3x3 conv of digits_cnn and a ReLU6
3x3 conv, bit-exact against pe_model.py (its accumulation order and fp32 rounding), within 1e-5
of the engines, MAC counts equal to layer_stats' constraint count; cycles beside accel_model's."""
from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import cocotb
    from cocotb.triggers import Timer
except ImportError:  # pragma: no cover
    cocotb = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PHASES = ("fp", "bp", "wg")

if cocotb is not None:
    @cocotb.test()
    async def run_cases(dut):
        cases = pickle.loads(Path(os.environ["EDGETUNE_PE_CASES"]).read_bytes())
        results = {}
        core = dut.u_core
        dut.rst.value = 1
        dut.start.value = 0
        await Timer(50, "ns")
        dut.rst.value = 0
        await Timer(20, "ns")
        for name, case in cases.items():
            ptr, lst, vec, gate = case["memories"]
            for a, v in ptr.items():
                core.u_ptr.mem[a].value = v
            for a, v in enumerate(lst):
                core.u_lst.mem[a].value = v
            for a, v in vec.items():
                core.u_vec.mem[a].value = v
            for a, v in gate.items():
                core.u_gate.mem[a].value = v
            for k, v in case["cfg"].items():
                getattr(dut, k).value = v
            await Timer(20, "ns")
            dut.start.value = 1
            await Timer(10, "ns")
            dut.start.value = 0
            while int(dut.busy.value):
                await Timer(5000, "ns")
            await Timer(20, "ns")
            out = {a: int(core.u_out.mem[a].value) for a in case["out_addrs"]}
            results[name] = {"out": out, "cycles": int(dut.cycles.value), "macs": int(dut.macs.value),
                             "terms": int(dut.terms.value), "tiles": int(dut.tiles.value)}
        Path(os.environ["EDGETUNE_PE_RESULTS"]).write_bytes(pickle.dumps(results))


# ---------------------------------------------------------------------------------------------
# pytest side: operands from the real models, the Python model, the engines
# ---------------------------------------------------------------------------------------------
def _operands(model_name, layer_name, n):
    """NHWC operands of one layer on a real batch (dense engine values), plus the engine outputs."""
    from edgetune.hardware.pe_model import Layer, states_relu
    from edgetune.runtime import load_model
    from edgetune.runtime.engines import make_engine
    from edgetune.runtime.engines.dense import DenseEngine
    from edgetune.runtime.layer_stats import layer_table

    model = load_model(str(ROOT / "models" / f"{model_name}.onnx"))
    d = np.load(ROOT / "models" / "digits_shifted.npz")
    x, y = d["x"][:n].astype(np.float32), d["y"][:n]
    ref = DenseEngine()
    ref.load(model)
    _loss, _g, vals, dvals = ref.forward_backward_values(x, y)
    node = next(nd for nd in model.nodes if nd.name == layer_name)
    producers = {nd.output: nd for nd in model.nodes}
    prev = producers[node.inputs[0]]
    while prev.op in ("flatten", "reshape"):
        prev = producers[prev.inputs[0]]
    xin, z = vals[node.inputs[0]], vals[node.output]
    dz = dvals[node.output]
    w = model.params[node.params["W"]]
    if node.op == "gemm":
        a = xin.reshape(n, 1, 1, -1)
        zz, dd = z.reshape(n, 1, 1, -1), dz.reshape(n, 1, 1, -1)
        wt = w.T.reshape(1, 1, *w.T.shape)                    # (1, 1, C, K)
        g_prev = dvals[prev.inputs[0]].reshape(n, 1, 1, -1)
    else:
        a, zz, dd = (v.transpose(0, 2, 3, 1) for v in (xin, z, dz))
        wt = w.transpose(2, 3, 1, 0)
        g_prev = dvals[prev.inputs[0]].transpose(0, 2, 3, 1)
    layer = Layer(a=a, a_state=states_relu(a), w=np.ascontiguousarray(wt), d=dd, z_state=states_relu(zz))
    nat = make_engine("native")
    nat.load(model)
    _l, grads = nat.loss_and_grads(x, y)
    gw = grads[node.params["W"]]
    wg = gw.T.reshape(1, 1, *gw.T.shape) if node.op == "gemm" else gw.transpose(2, 3, 1, 0)
    bias = model.params[node.params["B"]] if "B" in node.params else 0
    row = next(r for r in layer_table(model, vals, dvals, model.trainable_names()) if r["name"] == layer_name)
    return layer, {"fp": zz - bias, "bp": g_prev, "wg": wg}, row["macs_required"]


def _relu6_case():
    """A ReLU6 conv (2-bit states with saturation), 20 -> 70 channels (two lane tiles)."""
    from edgetune.hardware.pe_model import Layer, states_relu6
    from edgetune.runtime.layer_stats import _macs

    rng = np.random.default_rng(5)
    zin = rng.normal(1.0, 3.0, (1, 5, 5, 20)).astype(np.float32)
    a = np.clip(zin, 0, 6).astype(np.float32)
    zout = rng.normal(1.0, 3.0, (1, 5, 5, 70)).astype(np.float32)
    zst = states_relu6(zout)
    d = np.where(zst == 1, rng.normal(0, 1, zout.shape), 0).astype(np.float32)
    layer = Layer(a=a, a_state=states_relu6(zin), w=rng.normal(0, 0.2, (3, 3, 20, 70)).astype(np.float32),
                  d=d, z_state=zst)
    node = SimpleNamespace(op="conv", attrs={"group": 1, "stride": (1, 1), "dilation": (1, 1), "pads": (1, 1, 1, 1)})
    nchw = lambda v: v.transpose(0, 3, 1, 2)  # noqa: E731
    _dense, req = _macs(node, nchw(a != 0), nchw(layer.a_state == 1), nchw(zst == 1), (70, 20, 3, 3))
    return layer, None, req


@pytest.fixture(scope="module")
def cases():
    out = {}
    for name, (layer, engine, req) in {
        "digits_mlp /fc2/Gemm": _operands("digits_mlp", "/fc2/Gemm", 16),
        "digits_cnn /conv3/Conv": _operands("digits_cnn", "/conv3/Conv", 2),
        "relu6 conv 20->70": _relu6_case(),
    }.items():
        for ph in PHASES:
            want, counts = layer.run(ph)
            out[f"{name} {ph}"] = {"layer": layer, "phase": ph, "engine": None if engine is None else engine[ph],
                                   "required": int(req[ph]), "want": want, "counts": counts,
                                   "cfg": layer.cfg(ph), "memories": layer.memories(ph)}
    return out


# Icarus runs the 64 behavioural fp32 lanes too slowly for CI (minutes per phase): Verilator only.
@pytest.mark.parametrize("sim", ["verilator"])
def test_pe_core_fp_bp_wg_exact_counts_and_cycles(sim, cases, tmp_path):
    from edgetune.hardware import sim as S
    from edgetune.hardware.pe_model import unpack_words

    inp, res = tmp_path / "cases.pkl", tmp_path / "results.pkl"
    inp.write_bytes(pickle.dumps({k: {"cfg": c["cfg"], "memories": c["memories"], "out_addrs": sorted(c["want"])}
                                  for k, c in cases.items()}))
    S.run("pe_tb", sim, "test_pe_core", {}, python_path=[HERE], testcase="run_cases",
          env={"EDGETUNE_PE_CASES": str(inp), "EDGETUNE_PE_RESULTS": str(res)})
    results = pickle.loads(res.read_bytes())
    report = []
    for name, c in cases.items():
        r, layer = results[name], c["layer"]
        got = {a: unpack_words(v, layer.lanes) for a, v in r["out"].items()}
        for a, want in c["want"].items():
            np.testing.assert_array_equal(got[a].view(np.uint32), want.view(np.uint32), err_msg=f"{name} @{a}")
        assert {k: r[k] for k in ("terms", "macs", "tiles")} == c["counts"], name
        assert r["macs"] == c["required"], f"{name}: executed {r['macs']} != layer_stats required {c['required']}"
        if c["engine"] is not None:
            full = _assemble(got, layer, c["phase"])
            ref = c["engine"]
            scale = float(np.abs(ref).max())
            assert float(np.abs(full - ref).max()) <= 1e-5 * scale, name
        pes = layer.lanes
        report.append({"case": name, "rtl_cycles": r["cycles"], "macs": r["macs"], "entries": r["terms"],
                       "accel_model_cycles_16x16": math.ceil(r["macs"] / 256) + 32,
                       "accel_model_cycles_8x8": math.ceil(r["macs"] / pes) + 16})
    print("\n" + json.dumps(report, indent=1))
    (S.build_root() / f"pe_cycles-{sim}.json").write_text(json.dumps(report, indent=1))


def _assemble(words, layer, phase):
    """The core's output words as the engine's NHWC (FP/BP) or (ks, ks, C, K) (WG) array."""
    n, h, w, c, k = layer.dims()
    L = layer.lanes
    if phase == "wg":
        kt = layer.tiles(k)
        out = np.zeros((layer.ks * layer.ks, c, kt * L), np.float32)
        for a, v in words.items():
            t, rest = divmod(a, c * kt)
            ch, tt = divmod(rest, kt)
            out[t, ch, tt * L:(tt + 1) * L] = v
        return out[:, :, :k].reshape(layer.ks, layer.ks, c, k)
    count = k if phase == "fp" else c
    nt = layer.tiles(count)
    out = np.zeros((n * h * w, nt * L), np.float32)
    for a, v in words.items():
        p, tt = divmod(a, nt)
        out[p, tt * L:(tt + 1) * L] = v
    return out[:, :count].reshape(n, h, w, count)


def test_pe_model_rounding_matches_numpy_in_the_normal_range():
    """fmul/fadd round to nearest even like numpy's float32 wherever no subnormal is involved,
    and flush where one is (the hardware's documented difference)."""
    from hypothesis import given, settings, strategies as st

    from edgetune.hardware.pe_model import fadd, fmul

    normal = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False).map(np.float32).filter(
        lambda v: v == 0 or abs(float(v)) >= 2.0 ** -100)

    @settings(max_examples=300, deadline=None)
    @given(normal, normal)
    def check(a, b):
        a32, b32 = np.float32(a), np.float32(b)
        for got, ref in ((fmul(a32, b32), a32 * b32), (fadd(a32, b32), a32 + b32)):
            if ref == 0 or abs(float(ref)) >= 2.0 ** -126:
                assert got.view(np.uint32) == np.float32(ref).view(np.uint32) or (got == 0 and ref == 0)
            else:
                assert got == 0
    check()
    assert fmul(np.float32(2.0 ** -70), np.float32(2.0 ** -70)) == 0            # flushed, numpy keeps 2^-140
    assert fadd(np.float32(1e-39), np.float32(1.0)) == np.float32(1.0)          # subnormal input read as 0
