"""Accelerator performance/energy model (edgetune simulate): hand-computed layers, MAC identities, CLI."""
import json
import math

import numpy as np
import pytest

from edgetune.runtime import simulate as sim
from edgetune.runtime.errors import UsageError
from edgetune.runtime.ir import Model, Node


def _cfg(**over):
    cfg = sim.load_config()
    cfg.update({"pe_rows": 2, "pe_cols": 2, "precision": "fp32", "dram_bytes_per_cycle": 1000,
                "buffer_kb": {"weight": 32, "activation": 8, "error": 8, "pe_scratchpad": 8},
                "detect_overlap": 0.0, "static_power_w": 0.0})
    cfg.update(over)
    return cfg


def _gemm_relu():
    """One Gemm(3 -> 2) + ReLU layer with hand-chosen input and weights.

    x rows have 2, 1, 3, 0 non-zeros. z[:,0] = [3, 3, 3, 0], z[:,1] = [1, 3, 0, 0], so the ReLU
    mask (= G) has 2, 2, 1, 0 non-zeros per sample and 5 in all."""
    W = np.array([[1, 1, 1], [-1, 0, 1]], np.float32)
    x = np.array([[1, 0, 2], [0, 0, 3], [1, 1, 1], [0, 0, 0]], np.float32)
    nodes = [Node("fc", "gemm", ["input"], "z", {"W": "W"}, {"transA": 0, "transB": 1, "alpha": 1.0, "beta": 1.0},
                  "Gemm"),
             Node("act", "relu", ["z"], "a", {}, {}, "Relu")]
    model = Model(nodes, {"W": W}, "input", (None, 3), "a")
    z = x @ W.T
    a = np.maximum(z, 0)
    d = (z > 0).astype(np.float32)            # an error that is non-zero exactly on G
    return model, {"input": x, "z": z, "a": a}, {"z": d, "a": d}


def test_sram_energy_interpolation_hits_horowitz_points():
    cfg = sim.load_config()
    assert sim.sram_pj_per_64b(8, cfg) == pytest.approx(10)
    assert sim.sram_pj_per_64b(32, cfg) == pytest.approx(20)
    assert sim.sram_pj_per_64b(1024, cfg) == pytest.approx(100)
    assert sim.sram_pj_per_64b(2, cfg) == pytest.approx(5)                       # sqrt slope below 8 KB
    assert sim.sram_pj_per_64b(128, cfg) == pytest.approx(20 * 5 ** 0.4)        # log-log between 32 KB and 1 MB


def test_gemm_layer_cycles_by_hand():
    model, vals, dvals = _gemm_relu()
    layer = sim.simulate_step(model, vals, dvals, ["W"], _cfg())[0]["designs"]
    fill = 2 + 2
    # FP: row cycles = non-zero inputs x ceil(2 outputs / 2 lanes)
    assert layer["dense"]["fp"]["macs"] == 4 * 3 * 2
    assert layer["dense"]["fp"]["cycles"] == (3 + 3) + fill                    # 2 waves of [3, 3]
    assert layer["runtime-detect"]["fp"]["macs"] == 6 * 2
    # waves [2,1] and [3,0] -> 2 + 3; detection ceil(12/16) = 1; index generation ceil(6/16) = 1
    assert layer["runtime-detect"]["fp"]["cycles"] == (2 + 3) + fill + 1 + 1
    assert layer["runtime-detect"]["fp"]["imbalance_cycles"] == 5 - 3
    # planned: sorted [3,2,1,0] dealt in snake order -> rows 3+0 and 2+1
    assert layer["constraint"]["fp"]["macs"] == 12
    assert layer["constraint"]["fp"]["cycles"] == 3 + fill
    # BP is not needed (the layer reads the network input)
    assert all(layer[d]["bp"]["cycles"] == 0 for d in sim.DESIGNS)
    # WG: items are input features; cost = sum over samples with a != 0 of ceil(nnz(d_n) / 2) -> [2, 1, 3]
    assert layer["constraint"]["wg"]["macs"] == 2 * 2 + 1 * 2 + 3 * 1
    assert layer["constraint"]["wg"]["cycles"] == 3 + fill                   # rows 3+0 and 2+1
    assert layer["runtime-detect"]["wg"]["cycles"] == (2 + 3) + fill + math.ceil(20 / 16) + math.ceil(11 / 16)
    assert layer["dense"]["wg"]["cycles"] == (4 + 4) + fill                  # items [4, 4, 4]
    assert layer["constraint"]["fp"]["utilisation"] == pytest.approx(12 / (7 * 4))


def test_gemm_layer_energy_by_hand():
    model, vals, dvals = _gemm_relu()
    e = sim.simulate_step(model, vals, dvals, ["W"], _cfg())[0]["designs"]["constraint"]["fp"]["energy_pj"]
    act_b, w_b, sp_b = 10 / 8, 20 / 8, 10 / 8          # pJ per byte: 8 KB, 32 KB, 8 KB SRAMs
    assert e["mac"] == pytest.approx(12 * (3.7 + 0.9))
    x_stored = 12 / 8 + 6 * 4                          # 1-bit mask + packed non-zeros of the input
    a_stored = 8 / 8 + 5 * 4                           # ReLU output: mask + 5 non-zeros
    dram = 6 * 4 + x_stored + a_stored                 # weights + input read, compressed output written
    assert e["dram"] == pytest.approx(dram * 1950 / 8)
    buf = (6 * 4 * act_b          # 6 broadcast input reads
           + 6 * 4 * w_b          # weights into the PE scratchpads once
           + 12 * 4 * sp_b        # one scratchpad weight read per MAC
           + a_stored * act_b     # compressed output written
           + dram * act_b)        # DRAM data passes through the buffer once
    assert e["buffer"] == pytest.approx(buf)
    assert e["other"] == pytest.approx(8 * 0.1)        # the estimator classifies 8 pre-activations
    assert e["total"] == pytest.approx(e["mac"] + e["buffer"] + e["dram"] + e["other"])
    d = sim.simulate_step(model, vals, dvals, ["W"], _cfg())[0]["designs"]["dense"]["fp"]["energy_pj"]
    assert d["dram"] == pytest.approx((6 * 4 + 12 * 4 + 8 * 4) * 1950 / 8)
    assert d["mac"] == pytest.approx(24 * 4.6)


def test_dram_bound_phase_takes_dram_cycles():
    model, vals, dvals = _gemm_relu()
    layer = sim.simulate_step(model, vals, dvals, ["W"], _cfg(dram_bytes_per_cycle=1))[0]["designs"]
    assert layer["dense"]["fp"]["cycles"] == 6 * 4 + 12 * 4 + 8 * 4
    assert layer["dense"]["fp"]["utilisation"] == pytest.approx(24 / (104 * 4))


def test_gemm_bp_work_items_output_sparsity():
    node = Node("fc", "gemm", ["x"], "z", {"W": "W"}, {}, "Gemm")
    a_in = np.ones((2, 5), bool)
    g_in = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], bool)   # G_{l-1}: 3 and 1 outputs to compute
    g_out = np.array([[1, 1, 0], [1, 1, 1]], bool)              # errors: 2 and 3 non-zeros
    it = sim.work_items(node, (3, 5), a_in, g_in, g_out, cols=2)["bp"]
    assert list(it["cyc"]) == [2 * 2, 3 * 1]                   # broadcasts x ceil(lanes / 2)
    assert it["macs"] == 2 * 3 + 3 * 1 and it["bcast"] == 5


def test_conv_depthwise_packs_groups_side_by_side():
    node = Node("dw", "conv", ["x"], "z", {"W": "W"},
                {"group": 2, "stride": (1, 1), "dilation": (1, 1), "pads": (0, 0, 0, 0)}, "Conv")
    a_in = np.zeros((1, 2, 1, 2), bool)
    a_in[0, 0, 0, :] = True                 # channel 0: both pixels non-zero; channel 1: one
    a_in[0, 1, 0, 0] = True
    ones = np.ones((1, 2, 1, 2), bool)
    it = sim.work_items(node, (2, 1, 1, 1), a_in, ones, ones, cols=2)
    # 1x1 depthwise: two groups share a row's 2 lanes; a pixel takes the slower group's broadcasts
    assert list(it["fp"]["cyc"]) == [1, 1]
    assert it["fp"]["macs"] == 3


def test_planned_and_static_waves():
    c = np.array([5, 1, 1, 1, 4, 0, 0, 4])
    assert sim.static_waves(c, 2) == 5 + 1 + 4 + 4
    assert sim.planned(c, 2) == 8                          # total 16 over 2 rows, perfectly split
    assert sim.planned(np.array([7]), 4) == 7


def _digits_step(batch=16):
    from edgetune.runtime.engines.dense import DenseEngine
    from edgetune.runtime.onnx_import import load_model
    from edgetune import models

    model = load_model("digits_cnn")
    ds = models.load_dataset("digits_shifted")
    x, y = ds["x"][:batch].astype(np.float32), ds["y"][:batch]
    eng = DenseEngine()
    eng.load(model, model.trainable_names())
    eng.train_step(x, y)
    params = eng.get_params()
    _, _, vals, dvals = eng.forward_backward_values(x, y)
    return model, params, vals, dvals, x, y


def test_constraint_macs_equal_layer_table_and_designs_order():
    from edgetune.runtime.layer_stats import layer_table

    model, _, vals, dvals, _, _ = _digits_step()
    cfg = sim.load_config()
    layers = sim.simulate_step(model, vals, dvals, model.trainable_names(), cfg)
    table = layer_table(model, vals, dvals, model.trainable_names())
    for lay, row in zip(layers, table):
        for ph in sim.PHASES:
            assert lay["designs"]["constraint"][ph]["macs"] == row["macs_required"][ph]
            assert lay["designs"]["dense"][ph]["macs"] == row["macs_dense"][ph]
            assert lay["designs"]["runtime-detect"][ph]["macs"] <= row["macs_dense"][ph]
    tot = sim.summarise(layers, cfg)
    assert tot["constraint"]["total"]["macs"] < tot["dense"]["total"]["macs"]
    assert tot["constraint"]["total"]["ratios"]["energy_eff_vs_dense"] == pytest.approx(
        tot["dense"]["total"]["energy_pj"]["total"] / tot["constraint"]["total"]["energy_pj"]["total"])


def test_constraint_macs_equal_native_counters():
    import edgetune.runtime.engines.native  # noqa: F401  (the default engine: never skipped)
    from edgetune.runtime.engines import make_engine

    model, params, vals, dvals, x, y = _digits_step()
    trainable = model.trainable_names()
    layers = sim.simulate_step(model, vals, dvals, trainable, sim.load_config())
    ours = {ph: sum(l["designs"]["constraint"][ph]["macs"] for l in layers) for ph in sim.PHASES}
    ours["total"] = sum(ours.values())
    eng = make_engine("native")
    eng.load(model, trainable)
    eng.set_params(params)
    got = eng.measure_step(x, y)["macs_required"]
    assert {k: int(got[k]) for k in ("fp", "bp", "wg", "total")} == ours


def test_user_config_overrides_and_rejects(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"pe_rows": {"value": 8}, "buffer_kb": {"weight": 16}, "clock_mhz": 100}))
    cfg = sim.load_config(str(p))
    assert cfg["pe_rows"] == 8 and cfg["clock_mhz"] == 100
    assert cfg["buffer_kb"]["weight"] == 16 and cfg["buffer_kb"]["activation"] == 128
    for bad in ({"pe_row": 8}, {"pe_rows": 0}, {"precision": "int3"}, [1, 2]):
        p.write_text(json.dumps(bad))
        with pytest.raises(UsageError):
            sim.load_config(str(p))
    p.write_text("{not json")
    with pytest.raises(UsageError):
        sim.load_config(str(p))


def test_every_config_value_has_a_source():
    with open(sim.DEFAULT_CONFIG) as f:
        raw = json.load(f)
    for k, v in raw.items():
        if not k.startswith("_"):
            assert set(v) >= {"value", "unit", "source"} and len(v["source"]) > 20, k


def test_cli_writes_json_and_rejects_bad_input(tmp_path):
    from click.testing import CliRunner

    from edgetune.runtime.cli import simulate

    out = tmp_path / "sim.json"
    res = CliRunner().invoke(simulate, ["digits_cnn", "--batch-size", "8", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "constraint" in res.output and "| digits_cnn |" in res.output
    data = json.loads(out.read_text())
    tot = data["models"][0]["totals"]
    assert set(tot) == set(sim.DESIGNS)
    for des in sim.DESIGNS:
        assert set(tot[des]["total"]["energy_pj"]) == {"mac", "buffer", "dram", "other", "total"}
    res = CliRunner().invoke(simulate, ["digits_cnn", "--batch-size", "0"])
    assert res.exit_code != 0 and isinstance(res.exception, UsageError)
    missing = tmp_path / "nope" / "x.json"
    with pytest.raises(UsageError):
        sim.simulate_main(["digits_cnn"], 8, None, None, str(missing), echo=lambda *_: None)
    assert not missing.exists()
