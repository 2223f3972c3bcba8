"""pe_core.v: FP, BP and WG of a gemm layer of digits_mlp, a 3x3 conv of digits_cnn and a ReLU6
3x3 conv (Verilator, 8x8), and of small gemm/conv layers on a 2x2 array (Icarus): bit-exact
against pe_model.py (its accumulation order and fp32 rounding), within 1e-5 of float64 numpy and
of the engines, MAC counts equal to layer_stats' constraint count; cycles beside accel_model's.

    pytest -s hardware/rtl/test_pe_core.py    # prints the cycle table of docs/HARDWARE.md"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import cocotb
    from cocotb.triggers import RisingEdge, Timer
except ImportError:  # pragma: no cover
    cocotb = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PHASES = ("fp", "bp", "wg")

if cocotb is not None:
    async def _load_ports(dut, memories):
        """Through the core's load port, one word per clock (what a board's DMA does)."""
        ptr, lst, vec, gate = memories
        await RisingEdge(dut.clk)
        for sel, words in ((0, ptr), (1, dict(enumerate(lst))), (2, vec), (3, gate)):
            for a, v in words.items():
                dut.ld_we.value, dut.ld_sel.value, dut.ld_addr.value, dut.ld_data.value = 1, sel, a, v
                await RisingEdge(dut.clk)
        dut.ld_we.value = 0
        await Timer(3, "ns")      # off the clock edge: what follows is timed from here

    def _load_backdoor(core, memories):
        """Straight into the memory arrays: the 8x8 cases have tens of thousands of wide words."""
        ptr, lst, vec, gate = memories
        for mem, words in ((core.u_ptr.mem, ptr), (core.u_lst.mem, dict(enumerate(lst))), (core.u_vec.mem, vec),
                           (core.u_gate.mem, gate)):
            for a, v in words.items():
                mem[a].value = v

    async def _read_ports(dut, addrs):
        out = {}
        for a in addrs:
            dut.out_ra.value = a
            await RisingEdge(dut.clk)
            await Timer(1, "ns")          # the registered read port has the word now
            out[a] = int(dut.out_rd.value)
        return out

    @cocotb.test()
    async def run_cases(dut):
        cases = pickle.loads(Path(os.environ["EDGETUNE_PE_CASES"]).read_bytes())
        ports = os.environ.get("EDGETUNE_PE_LOAD", "ports") == "ports"
        results = {}
        core = dut.u_core
        dut.rst.value = 1
        dut.start.value = 0
        dut.ld_we.value = 0
        dut.ld_sel.value = 0
        dut.ld_addr.value = 0
        dut.ld_data.value = 0
        dut.out_ra.value = 0
        await Timer(50, "ns")
        dut.rst.value = 0
        await Timer(20, "ns")
        for name, case in cases.items():
            if ports:
                await _load_ports(dut, case["memories"])
            else:
                _load_backdoor(core, case["memories"])
            for k, v in case["cfg"].items():
                getattr(dut, k).value = v
            await Timer(20, "ns")
            dut.start.value = 1
            await Timer(10, "ns")
            dut.start.value = 0
            while int(dut.busy.value):
                await Timer(5000 if not ports else 200, "ns")
            await Timer(20, "ns")
            if ports:
                out = await _read_ports(dut, case["out_addrs"])
            else:
                out = {a: int(core.u_out.mem[a].value) for a in case["out_addrs"]}
            results[name] = {"out": out, "cycles": int(dut.cycles.value), "macs": int(dut.macs.value),
                             "terms": int(dut.terms.value), "tiles": int(dut.tiles.value)}
        Path(os.environ["EDGETUNE_PE_RESULTS"]).write_bytes(pickle.dumps(results))


# ---------------------------------------------------------------------------------------------
# pytest side: operands from the real models, the Python model, the engines
# ---------------------------------------------------------------------------------------------
def _operands(model_name, layer_name, n, lanes=64):
    """One layer of a real model on a real batch: NHWC operands (dense engine values), the engine
    results each PE phase must reproduce (and the checks that carry FP and BP to the native
    engine's loss_and_grads), layer_stats' required MACs, the native engine's own per-layer MAC
    counts and accel_model's cycles (the RTL's array size and the spec's 16x16) for that layer."""
    from edgetune.firmware_bridge.device_core import make_hosted_engine
    from edgetune.hardware.pe_model import Layer, states_relu
    from edgetune.runtime import load_model
    from edgetune.runtime.accel.cost import Operands
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
    layer = Layer(a=a, a_state=states_relu(a), w=np.ascontiguousarray(wt), d=dd, z_state=states_relu(zz),
                  lanes=lanes)
    # WG against the engine the device hosts (native, configured as device_core configures it)
    nat = make_hosted_engine("native")
    nat.load(model)
    _l, grads = nat.loss_and_grads(x, y)
    native_macs = nat.step_counters()
    native_macs = next(lay for lay in native_macs["layers"] if lay["name"] == layer_name)
    gw = grads[node.params["W"]]
    wg = gw.T.reshape(1, 1, *gw.T.shape) if node.op == "gemm" else gw.transpose(2, 3, 1, 0)
    bias = model.params[node.params["B"]] if "B" in node.params else 0
    row = next(r for r in layer_table(model, vals, dvals, model.trainable_names()) if r["name"] == layer_name)
    accel = _accel(node, w.shape, Operands.from_values(model, node, vals, dvals), lanes)
    native = _native_checks(model, node, vals, x, y, _l, grads)
    return {"layer": layer, "engine": {"fp": zz - bias, "bp": g_prev, "wg": wg},
            "engine_names": {"fp": "dense z - bias", "bp": "dense dL/da", "wg": "native loss_and_grads dW"},
            "native_checks": native,
            "required": row["macs_required"], "native": {ph: native_macs[ph]["required"] for ph in PHASES},
            "accel": accel}


def _native_checks(model, node, vals, x, y, loss, grads):
    """Each phase's result carried to something the native engine's loss_and_grads returns
    (these models are chains: weight layer, ReLU, ..., classifier gemm):
    FP: z + bias -> ReLU -> the classifier -> cross-entropy, against its loss;
    BP: the BP output is dL/dz of the previous weight layer (gated by its ReLU's G), so with
    that layer's input it gives that layer's weight and bias gradients."""
    producers = {nd.output: nd for nd in model.nodes}
    consumers = {i: nd for nd in model.nodes for i in nd.inputs}

    def skip(nd, step):
        while nd.op in ("flatten", "reshape", "relu"):
            nd = step(nd)
        return nd

    prev = skip(producers[node.inputs[0]], lambda nd: producers[nd.inputs[0]])
    head = skip(consumers[node.output], lambda nd: consumers[nd.output])
    assert head.op == "gemm" and consumers.get(head.output) is None, "the layer after must be the classifier"
    bias = model.params[node.params["B"]].astype(np.float64)
    wc, bc = (model.params[head.params[k]].astype(np.float64) for k in ("W", "B"))
    n = len(x)

    def fp(full):
        a = np.maximum(full + bias, 0.0)
        a = a.reshape(n, -1) if node.op == "gemm" else a.transpose(0, 3, 1, 2).reshape(n, -1)  # NCHW flatten
        logits = a @ wc.T + bc
        m = logits.max(1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(1, keepdims=True)))[:, 0]
        return [(np.array([(lse - logits[np.arange(n), y]).mean()]), np.array([loss]), "FP -> native loss")]

    def bp(full):
        xin = vals[prev.inputs[0]].astype(np.float64)
        if prev.op == "gemm":
            dw = full.reshape(n, -1).T @ xin.reshape(n, -1)                       # (K, C) like the weight
            ref = grads[prev.params["W"]]
        else:
            xin = xin.transpose(0, 2, 3, 1)
            c = xin.shape[3]
            oh, ow = full.shape[1:3]                      # the previous layer's output = this layer's input
            ks, st = model.params[prev.params["W"]].shape[2], prev.attrs["stride"][0]   # (conv2 has stride 2)
            pad = prev.attrs["pads"][0]
            xp = np.pad(xin, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            dw = np.stack([np.stack([xp[:, r:r + st * oh:st, s:s + st * ow:st].reshape(-1, c).T
                                     @ full.reshape(-1, full.shape[-1]) for s in range(ks)])
                           for r in range(ks)])                                  # (ks, ks, C, K)
            ref = grads[prev.params["W"]].transpose(2, 3, 1, 0)
        db = full.reshape(-1, full.shape[-1]).sum(0)
        return [(dw, ref, f"BP -> native d{prev.params['W']}"), (db, grads[prev.params["B"]],
                                                                 f"BP -> native d{prev.params['B']}")]

    return {"fp": fp, "bp": bp}


def _accel(node, wshape, ops, lanes):
    """accel_model's cycles for this layer: the per-layer cost function it calls
    (runtime/accel/cost.layer_costs, constraint design, fp32), on an array of the RTL's size
    ("same") and on the spec's 16x16 ("spec"). compute: the array's cycles; cycles: after the
    DRAM bound (max of compute and DRAM transfer), which is what the emulator reports."""
    from edgetune.firmware_bridge.accel_model import SPEC
    from edgetune.runtime.accel.cost import layer_costs

    side = int(round(lanes ** 0.5))
    out = {}
    for label, spec in (("same", {**SPEC, "pe_rows": side, "pe_cols": lanes // side}), ("spec", dict(SPEC))):
        cost = layer_costs(node, wshape, ops, {ph: True for ph in PHASES}, spec, designs=("constraint",),
                           eb=4)["constraint"]
        out[label] = {ph: (cost[ph]["compute_cycles"], cost[ph]["cycles"]) for ph in PHASES}
    return out


def _synthetic(shape_in, k, ks, relu6, seed, lanes=64):
    """A conv (ks 3) or gemm (ks 1) on random operands with ReLU (1-bit) or ReLU6 (2-bit) states;
    required MACs from layer_stats' own counter, cycles from accel_model's cost function."""
    from edgetune.hardware.pe_model import Layer, states_relu, states_relu6
    from edgetune.runtime.accel.cost import Operands
    from edgetune.runtime.constraints import rule_for
    from edgetune.runtime.layer_stats import _macs

    rng = np.random.default_rng(seed)
    n, h, w, c = shape_in
    zin = rng.normal(1.0, 3.0, shape_in).astype(np.float32)
    zout = rng.normal(1.0, 3.0, (n, h, w, k)).astype(np.float32)
    if relu6:
        a, ast, zst = np.clip(zin, 0, 6).astype(np.float32), states_relu6(zin), states_relu6(zout)
        rule = rule_for("clip", {"min": 0.0, "max": 6.0})
    else:
        a, ast, zst = np.maximum(zin, 0).astype(np.float32), states_relu(zin), states_relu(zout)
        rule = rule_for("relu")
    d = np.where(zst == 1, rng.normal(0, 1, zout.shape), 0).astype(np.float32)
    layer = Layer(a=a, a_state=ast, w=rng.normal(0, 0.2, (ks, ks, c, k)).astype(np.float32), d=d, z_state=zst,
                  lanes=lanes)
    if ks == 1:
        node = SimpleNamespace(op="gemm", attrs={})
        flat = lambda v: v.reshape(n, -1)  # noqa: E731
        wshape = (k, c)
    else:
        node = SimpleNamespace(op="conv", attrs={"group": 1, "stride": (1, 1), "dilation": (1, 1),
                                                 "pads": (1, 1, 1, 1)})
        flat = lambda v: v.transpose(0, 3, 1, 2)  # noqa: E731
        wshape = (k, c, ks, ks)
    _dense, req = _macs(node, flat(a != 0), flat(ast == 1), flat(zst == 1), wshape)
    ops = Operands(a_in=flat(a != 0), g_in=flat(ast == 1), g_out=flat(zst == 1), d_nz=flat(d != 0),
                   out_nnz=int(np.count_nonzero(zst)), in_rule=rule, out_rule=rule)
    accel = _accel(node, wshape, ops, lanes)
    return {"layer": layer, "engine": None, "required": req, "native": None, "accel": accel, "native_checks": {}}


def _reference64(layer):
    """Each phase in float64 numpy (no rounding to model): FP z, BP g gated by the input's G,
    WG dW from the errors gated by the output's G; shapes as _assemble returns them."""
    n, h, w, c, k = layer.dims()
    ks, pad = layer.ks, (layer.ks - 1) // 2
    a, W = layer.a.astype(np.float64), layer.w.astype(np.float64)
    d = np.where(layer.z_state == 1, layer.d, 0).astype(np.float64)
    ap = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dp = np.pad(d, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    fp = sum(ap[:, r:r + h, s:s + w] @ W[r, s] for r in range(ks) for s in range(ks))
    bp = sum(dp[:, 2 * pad - r:2 * pad - r + h, 2 * pad - s:2 * pad - s + w] @ W[r, s].T
             for r in range(ks) for s in range(ks))
    bp = np.where(layer.a_state == 1, bp, 0)
    wg = np.stack([np.stack([ap[:, r:r + h, s:s + w].reshape(-1, c).T @ d.reshape(-1, k) for s in range(ks)])
                   for r in range(ks)])
    return {"fp": fp, "bp": bp, "wg": wg}


# Verilator: the 8x8 core on real layers of digits_mlp and digits_cnn and a ReLU6 conv, memories
# loaded by writing the arrays directly (tens of thousands of 2048-bit words).
# Icarus runs 64 behavioural fp32 lanes too slowly for CI (about 120 cycles/s: 7 minutes for
# these nine phases; docs/HARDWARE.md), so it runs the same RTL as a 2x2 array (4 lanes, several lane tiles)
# on small random layers that still cover gemm, 3x3 conv, ReLU and ReLU6 states and tiling,
# loading and reading back through the core's own load and result ports.
CASES = {
    "verilator": {"rows": 8, "cols": 8, "load": "backdoor", "layers": lambda: {
        "digits_mlp /fc2/Gemm": _operands("digits_mlp", "/fc2/Gemm", 16),
        "digits_cnn /conv3/Conv": _operands("digits_cnn", "/conv3/Conv", 2),
        "relu6 conv 20->70": _synthetic((1, 5, 5, 20), 70, 3, True, 5),
    }},
    "icarus": {"rows": 2, "cols": 2, "load": "ports", "layers": lambda: {
        "relu gemm 11->9 (2x2)": _synthetic((3, 1, 1, 11), 9, 1, False, 7, lanes=4),
        "relu6 conv 5->6 (2x2)": _synthetic((1, 4, 4, 5), 6, 3, True, 8, lanes=4),
    }},
}


def _cases(sim):
    out = {}
    for name, c in CASES[sim]["layers"]().items():
        layer = c["layer"]
        ref64 = _reference64(layer)
        for ph in PHASES:
            want, counts = layer.run(ph)
            out[f"{name} {ph}"] = {**c, "phase": ph, "engine": None if c["engine"] is None else c["engine"][ph],
                                   "ref64": ref64[ph], "required": int(c["required"][ph]),
                                   "native": None if c["native"] is None else int(c["native"][ph]),
                                   "accel": {k: v[ph] for k, v in c["accel"].items()},
                                   "want": want, "counts": counts, "cfg": layer.cfg(ph),
                                   "memories": layer.memories(ph)}
    return out


def _close(got, ref, what):
    """Within 1e-5 of the reference, relative to its largest magnitude (the fp32 sums of the core
    and the engines differ only in their order of accumulation)."""
    scale = float(np.abs(ref).max()) or 1.0
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= 1e-5 * scale, f"{what}: max error {err:.3g} vs 1e-5 x {scale:.3g}"


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_pe_core_fp_bp_wg_exact_counts_and_cycles(sim, tmp_path):
    """Per case and phase: the core's output words equal pe_model's bit for bit; the assembled
    result is within 1e-5 of float64 numpy and of the engines; issued entries, executed MACs and
    tiles equal pe_model's; executed MACs equal layer_stats' required count (and the native
    engine's own per-layer count); RTL cycles are printed beside accel_model's."""
    from edgetune.hardware import sim as S
    from edgetune.hardware.pe_model import unpack_words

    cases = _cases(sim)
    inp, res = tmp_path / "cases.pkl", tmp_path / "results.pkl"
    inp.write_bytes(pickle.dumps({k: {"cfg": c["cfg"], "memories": c["memories"], "out_addrs": sorted(c["want"])}
                                  for k, c in cases.items()}))
    params = {"ROWS": CASES[sim]["rows"], "COLS": CASES[sim]["cols"]}
    S.run("pe_tb", sim, "test_pe_core", params, python_path=[HERE], testcase="run_cases",
          env={"EDGETUNE_PE_CASES": str(inp), "EDGETUNE_PE_RESULTS": str(res),
               "EDGETUNE_PE_LOAD": CASES[sim]["load"]})
    results = pickle.loads(res.read_bytes())
    report, checked_native = [], set()
    for name, c in cases.items():
        r, layer = results[name], c["layer"]
        assert layer.lanes == params["ROWS"] * params["COLS"]
        got = {a: unpack_words(v, layer.lanes) for a, v in r["out"].items()}
        for a, want in c["want"].items():
            np.testing.assert_array_equal(got[a].view(np.uint32), want.view(np.uint32), err_msg=f"{name} @{a}")
        assert {k: r[k] for k in ("terms", "macs", "tiles")} == c["counts"], name
        assert r["macs"] == c["required"], f"{name}: executed {r['macs']} != layer_stats required {c['required']}"
        if c["native"] is not None:
            assert r["macs"] == c["native"], f"{name}: executed {r['macs']} != native engine's required"
        full = _assemble(got, layer, c["phase"])
        _close(full, c["ref64"], f"{name} vs float64")
        if c["engine"] is not None:
            _close(full, c["engine"], f"{name} vs {c['engine_names'][c['phase']]}")
        check = c["native_checks"].get(c["phase"])
        for got_n, ref_n, what in (check(full.astype(np.float64)) if check else []):
            _close(got_n, ref_n, f"{name}: {what}")
            checked_native.add(c["phase"])
        report.append({"case": name, "entries": r["terms"], "macs": r["macs"], "rtl_cycles": r["cycles"],
                       "rtl_array": f"{params['ROWS']}x{params['COLS']}",
                       "accel_model_same_array": c["accel"]["same"], "accel_model_spec_16x16": c["accel"]["spec"]})
    if sim == "verilator":     # the model layers: FP and BP reached the native engine's results too
        assert checked_native == {"fp", "bp"}, checked_native
    print("\n" + cycle_table(report))
    (S.build_root() / f"pe_cycles-{sim}.json").write_text(json.dumps(report, indent=1))


def cycle_table(report) -> str:
    """The rows of docs/HARDWARE.md's PE table."""
    lines = ["| layer, phase | entries | MACs | RTL cycles (array) | accel_model same array: compute / with DRAM "
             "| accel_model 16x16: compute / with DRAM |", "|---|---|---|---|---|---|"]
    for r in report:
        same, spec = r["accel_model_same_array"], r["accel_model_spec_16x16"]
        lines.append(f"| {r['case']} | {r['entries']} | {r['macs']} | {r['rtl_cycles']} ({r['rtl_array']}) | "
                     f"{same[0]} / {same[1]} | {spec[0]} / {spec[1]} |")
    return "\n".join(lines)


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
