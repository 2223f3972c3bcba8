"""train_core.v (sequencer, position-estimation unit, lanes, memories): whole training steps of
Gemm chains driven through the core's own register and lane ports, the way the firmware drives
it (this file plays the firmware, with core_layout.py's memory map), against device_model.py:

* after FP, the estimator's lane states, per-sample lists and pointers, per-channel lists and
  counts equal the activations' masks and non-zeros, in the order BP and WG read them;
* after each step, every weight, bias and momentum word equals the model's bit for bit, and so
  do LOSS_GRADS' gradients;
* executed MACs per phase equal the constraint counts of the step (FP: non-zero inputs x K;
  BP: |G out| x |G in| per sample; WG: non-zero inputs x |G out|; the bias row is not counted).

Verilator runs digits_mlp (16 lanes, batch 32, two steps with momentum and weight decay) and
random small chains; Icarus the random chains on 4 lanes."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge, Timer
except ImportError:  # pragma: no cover
    cocotb = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
F32 = np.float32


def _bits(v) -> int:
    return int(np.asarray(v, F32).view(np.uint32))


def _f(bits: int) -> F32:
    return np.uint32(bits).view(F32)


if cocotb is not None:
    from edgetune.hardware import core_layout as CL
    from edgetune.hardware.device_model import softmax_xent

    class Core:
        """The firmware's view of train_core: registers, lanes, phases."""

        def __init__(self, dut, lanes):
            self.dut, self.L = dut, lanes

        async def reset(self):
            d = self.dut
            for s in ("reg_we", "reg_addr", "reg_wdata", "mem_sel", "mem_addr", "mem_lane", "mem_we", "mem_wdata"):
                getattr(d, s).value = 0
            d.rst.value = 1
            for _ in range(5):
                await RisingEdge(d.clk)
            d.rst.value = 0
            await RisingEdge(d.clk)

        async def regs(self, values: dict):
            d = self.dut
            for k, v in values.items():
                d.reg_we.value, d.reg_addr.value, d.reg_wdata.value = 1, CL.REG[k], int(v) & 0xFFFFFFFF
                await RisingEdge(d.clk)
            d.reg_we.value = 0

        async def counter(self, name):
            self.dut.reg_addr.value = CL.COUNTERS[name]
            await Timer(1, "ns")
            return int(self.dut.reg_rdata.value)

        async def wait(self, limit=5_000_000):
            d = self.dut
            await RisingEdge(d.clk)
            for _ in range(limit):
                if not int(d.busy.value):
                    return
                await RisingEdge(d.clk)
            raise AssertionError("train_core stayed busy")

        async def run(self, mode, values):
            await self.regs(values)
            await self.regs({"cmd": 1 | (mode << 1)})
            await self.wait()

        async def write_lanes(self, sel, addr, vals):
            d = self.dut
            for j, v in enumerate(vals):
                d.mem_we.value, d.mem_sel.value, d.mem_addr.value, d.mem_lane.value = 1, sel, addr, j
                d.mem_wdata.value = _bits(v)
                await RisingEdge(d.clk)
            d.mem_we.value = 0

        async def read_word(self, sel, addr, count):
            d, out = self.dut, []
            for j in range(count):
                d.mem_sel.value, d.mem_addr.value, d.mem_lane.value = sel, addr, j
                await RisingEdge(d.clk)
                await RisingEdge(d.clk)
                await Timer(1, "ns")
                out.append(_f(int(d.mem_rdata.value)))
            return np.array(out, F32)

        def word(self, arr, t):
            seg = np.zeros(self.L, F32)
            part = arr[t * self.L:(t + 1) * self.L]
            seg[:len(part)] = part
            return seg

    async def _load(core, lo, case, params, buf):
        """WF (rows: W[:, c], the bias last), MF, WB (rows W[k, :]) of every layer."""
        for i, lay in enumerate(case["layers"]):
            c, k = lo.dims[i]
            w, b = params[lay["w"]], params[lay["b"]]
            kt, ct = CL.tiles(k, core.L), CL.tiles(c, core.L)
            for r in range(c + 1):
                row = w[:, r] if r < c else b
                brow = None
                if buf is not None and lay["w"] in buf:
                    brow = buf[lay["w"]][:, r] if r < c else buf.get(lay["b"], np.zeros(k, F32))
                for t in range(kt):
                    await core.write_lanes(0, lo.wf[i] + r * kt + t, core.word(row, t))
                    if brow is not None:
                        await core.write_lanes(0, lo.mf[i] + r * kt + t, core.word(brow, t))
            if i > 0:
                for kk in range(k):
                    for t in range(ct):
                        await core.write_lanes(0, lo.wb[i] + kk * ct + t, core.word(w[kk], t))

    async def _read_params(core, lo, case):
        out, buf = {}, {}
        for i, lay in enumerate(case["layers"]):
            c, k = lo.dims[i]
            kt = CL.tiles(k, core.L)
            for base, dst in ((lo.wf[i], out), (lo.mf[i], buf)):
                rows = []
                for r in range(c + 1):
                    rows.append(np.concatenate([await core.read_word(0, base + r * kt + t, core.L)
                                                for t in range(kt)])[:k])
                m = np.array(rows, F32)
                dst[lay["w"]], dst[lay["b"]] = m[:c].T.copy(), m[c].copy()
        return out, buf

    def _estimator_view(dut, lo, region, n, feats, lanes):
        """What the estimator wrote for activation region `region`, read straight from the memories."""
        core = dut
        tiles = CL.tiles(feats, lanes)
        states = np.zeros((n, tiles * lanes), np.int64)
        for p in range(n):
            for t in range(tiles):
                word = int(core.u_sm.mem[lo.sd[region] + p * tiles + t].value)
                for j in range(lanes):
                    states[p, t * lanes + j] = (word >> (2 * j)) & 3
        lists = []
        for p in range(n):
            ptr = int(core.u_pm.mem[lo.p[region] + p].value)
            start, end = ptr & 0xFFFF, ptr >> 16
            ent = [int(core.u_lm.mem[e].value) for e in range(start, end)]
            lists.append([(v >> 32, _bits_to_float(v & 0xFFFFFFFF)) for v in ent])
        chans = []
        for ch in range(feats):
            t, j = divmod(ch, lanes)
            cnt = int(getattr(core.u_est.lane[j], "cnt")[lo.cnt[region] + t].value)
            bank = core.gbank[j].u_gm.mem
            ent = [int(bank[lo.g[region] + t * lo.nmax + i].value) for i in range(cnt)]
            chans.append([(v >> 32, _bits_to_float(v & 0xFFFFFFFF)) for v in ent])
        return {"states": states[:, :feats].tolist(), "lists": lists, "chans": chans}

    def _bits_to_float(b):
        return float(_f(b))

    async def _step(core, lo, case, x, y, mode, peek):
        """One TRAIN_STEP (mode 'train') or LOSS_GRADS ('grad'): returns (loss bits, grads or None, counters)."""
        n = len(x)
        xs = x.reshape(n, -1)
        layers = case["layers"]
        await core.regs(CL.input_regs(lo, n))
        c0 = lo.dims[0][0]
        for p in range(n):
            for t in range(CL.tiles(c0, core.L)):
                await core.write_lanes(2, 0, core.word(xs[p], t))
                await core.regs({"push": p | (t << 8) | ((t + 1 == CL.tiles(c0, core.L)) << 16)})
                await core.wait()
        for i, lay in enumerate(layers):
            await core.run(CL.FP, CL.fp_regs(lo, i, n, lay["act"], True, i == len(layers) - 1))
        views = {}
        if peek:
            feats = [c0] + [k for _c, k in lo.dims]
            views = {a: _estimator_view(core.dut, lo, a, n, f, core.L) for a, f in enumerate(feats)}
        # the loss on the "firmware" side: logits out, dL/dz in
        kl = lo.dims[-1][1]
        ktl = CL.tiles(kl, core.L)
        z = np.stack([np.concatenate([await core.read_word(1, lo.sd[-1] + p * ktl + t, core.L)
                                      for t in range(ktl)])[:kl] for p in range(n)])
        loss, correct, dz = softmax_xent(z, y)
        for p in range(n):
            for t in range(ktl):
                await core.write_lanes(1, lo.sd[-1] + p * ktl + t, core.word(dz[p], t))
        opt = case["opt"]
        grads = {}
        for i in range(len(layers) - 1, -1, -1):
            lay = layers[i]
            if i > 0:
                await core.run(CL.BP, CL.bp_regs(lo, i, n))
            await core.regs({"lr_neg": _bits(-F32(opt["lr"])), "mom": _bits(F32(opt["momentum"])),
                             "wd": _bits(F32(opt["weight_decay"]))})
            await core.run(CL.WG, CL.wg_regs(lo, i, n, has_bias=True, train_w=True, train_b=True, wb_copy=i > 0,
                                             grad=(mode == "grad"), wd=opt["weight_decay"] != 0,
                                             mom=opt["momentum"] != 0, wbuf=case["has_buf"],
                                             bbuf=case["has_buf"]))
            if mode == "grad":
                c, k = lo.dims[i]
                kt = CL.tiles(k, core.L)
                rows = np.array([np.concatenate([await core.read_word(0, lo.gr + r * kt + t, core.L)
                                                 for t in range(kt)])[:k] for r in range(c + 1)], F32)
                grads[lay["w"]], grads[lay["b"]] = rows[:c].T.copy(), rows[c].copy()
        counts = {k: await core.counter(k) for k in CL.COUNTERS}
        return _bits(loss), correct, grads, counts, views

    @cocotb.test()
    async def run_cases(dut):
        cases = pickle.loads(Path(os.environ["EDGETUNE_CORE_CASES"]).read_bytes())
        lanes = int(os.environ["EDGETUNE_CORE_LANES"])
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        results = {}
        for name, case in cases.items():
            core = Core(dut, lanes)
            await core.reset()
            lo = CL.layout(case["dims"], lanes, case["nmax"])
            params = {k: np.asarray(v, F32) for k, v in case["params"].items()}
            await _load(core, lo, case, params, None)
            out = []
            for s, (x, y) in enumerate(case["batches"]):
                before = {k: await core.counter(k) for k in CL.COUNTERS}
                loss, correct, grads, counts, views = await _step(core, lo, case, x, y, case["mode"], s == 0)
                case["has_buf"] = case["opt"]["momentum"] != 0 and case["mode"] == "train"
                delta = {k: counts[k] - before[k] for k in counts}
                p, buf = await _read_params(core, lo, case)
                out.append({"loss": loss, "correct": correct, "grads": grads, "counts": delta, "params": p,
                            "buf": buf, "views": views})
            results[name] = out
        Path(os.environ["EDGETUNE_CORE_RESULTS"]).write_bytes(pickle.dumps(results))


# -- the pytest side: cases, the model's answers, the comparison ----------------------------------
def _digits_case():
    from edgetune.runtime import load_model

    m = load_model("digits_mlp")
    d = np.load(ROOT / "models" / "digits_shifted.npz")
    x, y = d["x"].astype(F32), d["y"]
    params = {k: np.asarray(v, F32) for k, v in m.params.items()}
    layers = [{"w": "fc1.weight", "b": "fc1.bias", "act": "relu"}, {"w": "fc2.weight", "b": "fc2.bias", "act": "relu"},
              {"w": "fc3.weight", "b": "fc3.bias", "act": "none"}]
    return {"dims": [(64, 128), (128, 64), (64, 10)], "nmax": 32, "layers": layers, "params": params,
            "opt": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4}, "mode": "train",
            "batches": [(x[:32], y[:32]), (x[32:64], y[32:64])], "has_buf": False}


def _random_case(seed, dims, n, mode, opt):
    rng = np.random.default_rng(seed)
    params, layers = {}, []
    for i, (c, k) in enumerate(dims):
        params[f"w{i}"] = (rng.standard_normal((k, c)) / np.sqrt(c)).astype(F32)
        params[f"b{i}"] = (0.1 * rng.standard_normal(k)).astype(F32)
        layers.append({"w": f"w{i}", "b": f"b{i}", "act": "relu" if i < len(dims) - 1 else "none"})
    batches = []
    for _ in range(2):
        x = np.maximum(rng.standard_normal((n, dims[0][0])), 0).astype(F32)
        x[0] = 0                                   # an all-zero sample: empty lists everywhere
        batches.append((x, rng.integers(0, dims[-1][1], n)))
    return {"dims": dims, "nmax": max(n, 4), "layers": layers, "params": params, "opt": opt, "mode": mode,
            "batches": batches, "has_buf": False}


CASES = {
    "verilator": (16, lambda: {
        "digits_mlp": _digits_case(),
        "random 20-24-10 sgd": _random_case(1, [(20, 24), (24, 10)], 5, "train",
                                            {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}),
        "random 17-33-5-3 grads": _random_case(2, [(17, 33), (33, 5), (5, 3)], 3, "grad",
                                               {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}),
    }),
    "icarus": (4, lambda: {
        "random 6-9-3 momentum": _random_case(3, [(6, 9), (9, 3)], 3, "train",
                                              {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.001}),
        "random 5-4-3 grads": _random_case(4, [(5, 4), (4, 3)], 2, "grad",
                                           {"lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}),
    }),
}


def _model_run(case):
    """The device model's answers for every step of a case."""
    from edgetune.hardware.device_model import DeviceModel, Layer, Optim

    layers = [Layer(f"l{i}", lay["w"], lay["b"], c, k, lay["act"], True, True)
              for i, (lay, (c, k)) in enumerate(zip(case["layers"], case["dims"]))]
    o = case["opt"]
    dm = DeviceModel(layers, Optim(o["lr"], o["momentum"], o["weight_decay"]), case["dims"][0][0])
    dm.load_state(case["params"], {"t": 0, "buf": {}}, 0)
    out = []
    for x, y in case["batches"]:
        acts = dm.forward(x)
        if case["mode"] == "train":
            loss, grads = dm.loss_and_grads(x, y)
            dm.train_step(x, y)
        else:
            loss, grads = dm.loss_and_grads(x, y)
        out.append({"loss": loss, "grads": grads, "acts": acts, "params": {k: v.copy() for k, v in dm.params.items()},
                    "buf": {k: v.copy() for k, v in dm.buf.items()}})
    return out



@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_train_core_steps_bit_exact(sim, tmp_path):
    from edgetune.hardware import sim as S
    from edgetune.hardware.device_model import required_macs

    lanes, make = CASES[sim]
    cases = make()
    inp, res = tmp_path / "cases.pkl", tmp_path / "results.pkl"
    inp.write_bytes(pickle.dumps(cases))
    S.run("train_core", sim, "test_train_core", {"L": lanes, "LB": lanes.bit_length() - 1}, python_path=[HERE],
          testcase="run_cases", env={"EDGETUNE_CORE_CASES": str(inp), "EDGETUNE_CORE_RESULTS": str(res),
                                     "EDGETUNE_CORE_LANES": str(lanes)})
    results = pickle.loads(res.read_bytes())
    for name, case in cases.items():
        want = _model_run(case)
        for s, (got, exp) in enumerate(zip(results[name], want)):
            where = f"{name} step {s}"
            assert got["loss"] == _bits(exp["loss"]), f"{where}: loss"
            if case["mode"] == "train":
                for k, v in exp["params"].items():
                    assert np.array_equal(got["params"][k].view(np.uint32), v.view(np.uint32)), f"{where}: {k}"
                for k, v in exp["buf"].items():
                    assert np.array_equal(got["buf"][k].view(np.uint32), v.view(np.uint32)), f"{where}: buf {k}"
            else:
                for k, v in exp["grads"].items():
                    assert np.array_equal(got["grads"][k].view(np.uint32), v.view(np.uint32)), f"{where}: grad {k}"
            fp, bp, wg = required_macs(exp["acts"])
            c = got["counts"]
            assert (c["mac_fp"], c["mac_bp"], c["mac_wg"]) == (fp, bp, wg), f"{where}: MAC counts"
            if s == 0:
                _check_views(got["views"], exp["acts"], where)


def _check_views(views, acts, where):
    """The estimator's output for every activation region equals the masks and non-zeros."""
    regions = [acts[0][0]] + [np.where(g, z, 0).astype(F32) if True else z for _a, z, g in acts]
    gates = [acts[0][0] != 0] + [g for _a, _z, g in acts]
    for r, (a, g) in enumerate(zip(regions, gates)):
        v = views[r]
        if r > 0:
            assert np.array_equal(np.array(v["states"]), g.astype(np.int64)), f"{where}: states of region {r}"
        for p in range(a.shape[0]):
            want = [(int(c), float(a[p, c])) for c in np.flatnonzero(g[p])]
            assert v["lists"][p] == want, f"{where}: list of sample {p}, region {r}"
        for ch in range(a.shape[1]):
            want = [(int(p), float(a[p, ch])) for p in np.flatnonzero(g[:, ch])]
            assert v["chans"][ch] == want, f"{where}: channel list {ch}, region {r}"
