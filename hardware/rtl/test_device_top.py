"""device_top.v, the whole device (link, PicoRV32 and its firmware, training array), through its
serial line only, against device_model.py:

* HELLO says compute rtl; COMMIT MODEL/STATE load a small Gemm/ReLU chain; two TRAIN_STEPs
  return the model's loss bit for bit and the model's correct count; READ_STATE then returns every
  parameter and momentum buffer bit for bit, with meta.step and the optimizer's t;
* PREDICT of more samples than the array holds at once (chunked) and LOSS_GRADS equal the model;
* READ_COUNTERS' last step has the constraint MAC counts; the refusals name what is wrong
  (BAD_DESCRIPTOR for a conv model, BAD_BATCH for a wrong shape, a float target and an
  out-of-range label, BAD_STATE for a first state without every parameter, NO_MODEL);
* with a boot configuration of `reset_after 1`, the device resets itself after its first step: the
  answer is lost and the next request gets SESSION_MISMATCH under a new session id."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np

from edgetune.firmware_bridge.codecs import encode_batch

try:
    import cocotb
except ImportError:  # pragma: no cover
    cocotb = None

HERE = Path(__file__).resolve().parent
F32 = np.float32
SESSION_ERR = 0x03


def _descriptor(dims, acts, opt, op="gemm"):
    nodes = [{"name": "/Flatten", "op": "flatten", "inputs": ["input"], "output": "f", "params": {}, "attrs": {},
              "onnx_op": "Flatten"}]
    prev, params = "f", []
    for i, ((c, k), act) in enumerate(zip(dims, acts)):
        out = f"g{i}"
        nodes.append({"name": f"/fc{i}/Gemm", "op": op, "inputs": [prev], "output": out,
                      "params": {"W": f"fc{i}.weight", "B": f"fc{i}.bias"},
                      "attrs": {"transB": 1, "alpha": 1.0, "beta": 1.0}, "onnx_op": "Gemm"})
        params += [{"name": f"fc{i}.weight", "shape": [k, c]}, {"name": f"fc{i}.bias", "shape": [k]}]
        prev = out
        if act == "relu":
            nodes.append({"name": f"/relu{i}", "op": "relu", "inputs": [prev], "output": f"r{i}", "params": {},
                          "attrs": {}, "onnx_op": "Relu"})
            prev = f"r{i}"
    return {"format": 1, "input_name": "input", "input_shape": [None, 1, 4, 5], "output_name": prev, "nodes": nodes,
            "params": params, "trainable": [p["name"] for p in params],
            "optimizer": {"name": "sgd", "momentum": 0.0, "weight_decay": None, "betas": [0.9, 0.999], "eps": 1e-08,
                          "schedule": "constant", "total_steps": 0, "min_lr": 0.0, **opt},
            "loss": "cross_entropy"}


if cocotb is not None:
    from edgetune.firmware_bridge import protocol as P
    from edgetune.firmware_bridge.codecs import state_to_tensor_set
    from edgetune.firmware_bridge.framing import crc32
    from edgetune.hardware.device_bridge import BenchHost, DeviceBench
    from edgetune.hardware.sim import params_from_env

    @cocotb.test()
    async def run_protocol(dut):
        case = pickle.loads(Path(os.environ["EDGETUNE_DEV_CASE"]).read_bytes())
        bench = DeviceBench(dut, params_from_env())
        await bench.reset(caps='"test_fragment":1')
        cl = BenchHost(bench)
        out = {"hello": await cl.hello()}
        desc = json.dumps(case["desc"]).encode()
        out["train_no_model"] = await cl.train(0, case["batches"][0])
        out["bad_desc"] = await cl.commit(P.BLOB_MODEL, json.dumps(case["bad_desc"]).encode())
        out["model"] = await cl.commit(P.BLOB_MODEL, desc)
        partial = {k: v for k, v in list(case["params"].items())[1:]}
        out["partial_state"] = await cl.commit(P.BLOB_STATE, state_to_tensor_set(partial, {"t": 0, "buf": {}}, 0))
        out["state"] = await cl.commit(P.BLOB_STATE, state_to_tensor_set(case["params"], {"t": 0, "buf": {}}, 0))
        out["bad_batches"] = [await cl.train(0, b) for b in case["bad_batches"]]
        out["steps"] = [await cl.train(i, b) for i, b in enumerate(case["batches"])]
        out["read_state"] = await cl.result(P.READ_STATE, P.READ_STATE_REQ.pack(cl.session, P.STATE_ALL))
        out["predict"] = await cl.batch_cmd(P.PREDICT, case["predict"])
        out["loss_grads"] = await cl.batch_cmd(P.LOSS_GRADS, case["batches"][0])
        out["counters"] = await cl.result(P.READ_COUNTERS, P.SESSION.pack(cl.session))
        # the device resets itself after one step: the answer is lost, the session changes
        await bench.reset(entropy=0x777, reset_after=1)
        cl2 = BenchHost(bench)
        first = (await cl2.hello())["session_id"]
        await cl2.commit(P.BLOB_MODEL, desc)
        await cl2.commit(P.BLOB_STATE, state_to_tensor_set(case["params"], {"t": 0, "buf": {}}, 0))
        await cl2.put(P.BLOB_BATCH, case["batches"][0])
        b0 = case["batches"][0]
        cl2.seq += 1
        lost = await bench.request(P.TRAIN_STEP, cl2.seq, P.TRAIN_STEP_REQ.pack(cl2.session, 0, len(b0), crc32(b0)))
        after = await cl2.req(P.READ_COUNTERS, P.SESSION.pack(cl2.session))
        second = (await cl2.hello())["session_id"]
        out["reset"] = {"lost": lost is None, "after": after, "sessions": (first, second)}
        Path(os.environ["EDGETUNE_DEV_RESULTS"]).write_bytes(pickle.dumps(out))


def _case():
    rng = np.random.default_rng(5)
    dims, acts = [(20, 12), (12, 3)], ["relu", "none"]
    opt = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.001}
    params = {}
    for i, (c, k) in enumerate(dims):
        params[f"fc{i}.weight"] = (rng.standard_normal((k, c)) / np.sqrt(c)).astype(F32)
        params[f"fc{i}.bias"] = (0.1 * rng.standard_normal(k)).astype(F32)
    xs = [np.maximum(rng.standard_normal((5, 1, 4, 5)), 0).astype(F32) for _ in range(2)]
    ys = [rng.integers(0, 3, 5) for _ in range(2)]
    xp = np.maximum(rng.standard_normal((40, 1, 4, 5)), 0).astype(F32)
    bad = [encode_batch(xs[0].reshape(5, 1, 5, 4), ys[0]),                 # wrong shape
           encode_batch(xs[0], np.ones((5, 3), F32)),                       # float targets
           encode_batch(xs[0], np.array([0, 1, 2, 3, 0]))]                  # label 3 of 3 classes
    return {"desc": _descriptor(dims, acts, opt), "bad_desc": _descriptor(dims, acts, opt, op="conv"),
            "params": params, "batches": [encode_batch(x, y) for x, y in zip(xs, ys)], "xs": xs, "ys": ys,
            "predict": encode_batch(xp, None), "xp": xp, "bad_batches": bad}


def test_device_top_protocol_bit_exact(tmp_path, firmware_tools):
    from edgetune.firmware_bridge import protocol as P
    from edgetune.firmware_bridge.codecs import decode_tensor_set, tensor_set_to_state
    from edgetune.hardware import sim as S
    from edgetune.hardware.device_model import DeviceModel, required_macs

    case = _case()
    inp, res = tmp_path / "case.pkl", tmp_path / "results.pkl"
    inp.write_bytes(pickle.dumps(case))
    params = dict(S.DEVICE_PARAMS)
    S.run("device_tb", "verilator", "test_device_top", params, python_path=[HERE], testcase="run_protocol",
          env={"EDGETUNE_DEV_CASE": str(inp), "EDGETUNE_DEV_RESULTS": str(res)})
    out = pickle.loads(res.read_bytes())

    caps = out["hello"]["caps"]
    assert caps["compute"] == "rtl" and caps["lanes"] == params["L"] and caps["test_fragment"] == 1
    assert out["train_no_model"][0] == P.E_NO_MODEL
    code, text = out["bad_desc"]
    assert code == P.E_BAD_DESCRIPTOR and "unsupported op" in text and "conv" in text
    assert out["model"] == (None, P.COMMIT_RSP.pack(1, 0))
    code, text = out["partial_state"]
    assert code == P.E_BAD_STATE and "every parameter" in text
    assert out["state"][0] is None
    texts = [t for _c, t in out["bad_batches"]]
    assert [c for c, _t in out["bad_batches"]] == [P.E_BAD_BATCH] * 3, texts
    assert "shape" in texts[0] and "float targets" in texts[1] and "label" in texts[2]

    dm = DeviceModel.from_descriptor(case["desc"])
    dm.load_state(case["params"], {"t": 0, "buf": {}}, 0)
    for i, (x, y) in enumerate(zip(case["xs"], case["ys"])):
        acts = dm.forward(x)                 # this step's masks (before its update)
        err, p = out["steps"][i]
        assert err is None, p
        done, loss, correct, nb, *_phases, cycles = P.TRAIN_STEP_RSP.unpack(p)
        want_loss, want_correct = dm.train_step(x, y)
        assert (done, nb, correct) == (i, 5, want_correct)
        assert loss == float(want_loss), f"step {i}: loss {loss!r} != model {float(want_loss)!r}"
        assert cycles > 0
    _loss, blob = out["read_state"]
    got_params, got_opt, step = tensor_set_to_state(blob)
    assert step == 2 and got_opt["t"] == 2
    for k, v in dm.params.items():
        assert np.array_equal(got_params[k].view(np.uint32), v.view(np.uint32)), k
    for k, v in dm.buf.items():
        assert np.array_equal(got_opt["buf"][k].view(np.uint32), v.view(np.uint32)), f"buf {k}"
    _loss, blob = out["predict"]
    logits = decode_tensor_set(blob)[1]["logits"]
    assert np.array_equal(logits.view(np.uint32), dm.predict(case["xp"]).view(np.uint32))
    loss, blob = out["loss_grads"]
    want_loss, want_grads = dm.loss_and_grads(case["xs"][0], case["ys"][0])
    grads = decode_tensor_set(blob)[1]
    assert loss == float(want_loss) and set(grads) == set(want_grads)
    for k, v in want_grads.items():
        assert np.array_equal(grads[k].view(np.uint32), v.view(np.uint32)), f"grad {k}"
    counters = json.loads(out["counters"][1])
    assert counters["compute"] == "rtl" and counters["accelerator"]["totals"]["steps"] == 2
    phases = counters["accelerator"]["last_step"]["phases"]
    want = required_macs(acts)
    assert tuple(phases[ph]["executed_macs"] for ph in ("fp", "bp", "wg")) == want
    assert tuple(phases[ph]["dense_macs"] for ph in ("fp", "bp", "wg")) == (5 * (20 * 12 + 12 * 3), 5 * 12 * 3,
                                                                           5 * (20 * 12 + 12 * 3))
    r = out["reset"]
    assert r["lost"] and r["after"][0] == SESSION_ERR and r["sessions"][0] != r["sessions"][1]
