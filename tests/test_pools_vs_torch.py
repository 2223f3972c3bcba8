"""Max and average pooling, forward and backward, against torch on generated shapes: padding,
ceil_mode and count_include_pad by value (issue 15, item 6). torch's pooling follows the same
rules as ONNX for symmetric pads no larger than half the kernel, which is what is drawn here."""
import numpy as np
from hypothesis import given, settings, strategies as st

from requires import need
from edgetune import _native


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h, w = draw(st.integers(k[0], 9)), draw(st.integers(k[1], 9))
    return dict(n=draw(st.integers(1, 3)), h=h, w=w, c=draw(st.integers(1, 5)), k=k, s=s, p=p,
                ceil=draw(st.booleans()), cip=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def _data(case):
    rng = np.random.default_rng(case["seed"])
    # continuous values: no ties, so the max is unique and its gradient well defined
    return rng.standard_normal((case["n"], case["h"], case["w"], case["c"])).astype(np.float32), rng


def _onnx_pads(p):
    return (p[0], p[1], p[0], p[1])


@settings(max_examples=60, deadline=None)
@given(pool_case())
def test_maxpool_forward_backward_match_torch(case):
    torch = need("torch")
    x, rng = _data(case)
    y, arg = _native.maxpool_forward(x, case["k"], case["s"], _onnx_pads(case["p"]), case["ceil"])
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    yt = torch.nn.functional.max_pool2d(xt, case["k"], case["s"], case["p"], ceil_mode=case["ceil"])
    assert y.shape == tuple(yt.permute(0, 2, 3, 1).shape)
    np.testing.assert_array_equal(y, yt.detach().permute(0, 2, 3, 1).numpy())
    gy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(gy.transpose(0, 3, 1, 2).copy()))
    gx = _native.maxpool_backward(gy, arg, x.shape)
    np.testing.assert_allclose(gx, xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(pool_case())
def test_avgpool_forward_backward_match_torch(case):
    torch = need("torch")
    x, rng = _data(case)
    pads = _onnx_pads(case["p"])
    y = _native.avgpool_forward(x, case["k"], case["s"], pads, case["ceil"], case["cip"])
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    yt = torch.nn.functional.avg_pool2d(xt, case["k"], case["s"], case["p"], ceil_mode=case["ceil"],
                                        count_include_pad=case["cip"])
    assert y.shape == tuple(yt.permute(0, 2, 3, 1).shape)
    np.testing.assert_allclose(y, yt.detach().permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(gy.transpose(0, 3, 1, 2).copy()))
    gx = _native.avgpool_backward(gy, x.shape, case["k"], case["s"], pads, case["ceil"], case["cip"])
    np.testing.assert_allclose(gx, xt.grad.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


@st.composite
def asym_case(draw):
    """Pads that differ per side (ONNX allows them, torch does not), each smaller than the kernel."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pads = tuple(draw(st.integers(0, k[i % 2] - 1)) for i in range(4))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h, w = draw(st.integers(k[0], 9)), draw(st.integers(k[1], 9))
    return dict(n=draw(st.integers(1, 2)), h=h, w=w, c=draw(st.integers(1, 4)), k=k, s=s, pads=pads,
                ceil=draw(st.booleans()), cip=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def _ort_pool(op, case, x_nchw):
    """One MaxPool/AveragePool node (opset 19) run by onnxruntime: the ONNX semantics themselves."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    attrs = dict(kernel_shape=list(case["k"]), strides=list(case["s"]), pads=list(case["pads"]),
                 ceil_mode=int(case["ceil"]))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(case["cip"])
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_nchw.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x_nchw})[0]


@settings(max_examples=40, deadline=None)
@given(asym_case())
def test_pools_with_asymmetric_pads_match_onnxruntime(case):
    """Forward only (onnxruntime has no backward): per-side pads, ceil_mode, count_include_pad."""
    x, _ = _data(case)
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y, _ = _native.maxpool_forward(x, case["k"], case["s"], case["pads"], case["ceil"])
    np.testing.assert_array_equal(y.transpose(0, 3, 1, 2), _ort_pool("MaxPool", case, xn))
    ya = _native.avgpool_forward(x, case["k"], case["s"], case["pads"], case["ceil"], case["cip"])
    np.testing.assert_allclose(ya.transpose(0, 3, 1, 2), _ort_pool("AveragePool", case, xn), rtol=1e-5, atol=1e-6)
