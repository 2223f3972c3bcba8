"""Random small CNN/MLP graphs as ONNX, drawn by hypothesis, for differential tests.

A graph is a chain of blocks over NCHW tensors: convolutions (any kernel, stride, pads,
dilation, groups, depthwise, 1x1, with or without bias and BatchNormalization), the
activations with position constraints (ReLU, ReLU6, hard-swish) and without (LeakyReLU,
none, a Clip that is not ReLU6), max/average pools, residual blocks and forks (one value
feeding several consumers), then a head of GlobalAveragePool or Flatten and one or two
Gemm layers. Channel counts are small and often odd; batch and image size vary.

Parameters are shared the ways exports share them: tied blocks (one weight and bias read by 2-5
convs or Gemms), and parameters that reuse an earlier initializer of their shape (as torch's
exporters store equal tensors once: weights, biases, BatchNorm scales and means), read directly
or through Identity nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

ACTS = ("relu", "relu6", "hardswish", "leakyrelu", "none", "clip_sym")
# Multiples of the vector width take the kernels' vector paths, odd counts their tails: draw both often.
CHANNELS = st.sampled_from([1, 2, 3, 5, 7, 8, 8, 8, 9, 12, 15, 16, 16, 16, 17, 24, 32])


@dataclass
class _Builder:
    rng: np.random.Generator
    share: float = 0.0      # chance that a parameter reuses an earlier initializer of its shape
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    n: int = 0
    text: List[str] = field(default_factory=list)
    by_shape: dict = field(default_factory=dict)   # shape -> names of parameter initializers

    def name(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def init(self, kind, arr):
        nm = self.name(kind)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), nm))
        return nm

    def param(self, kind, arr):
        """A parameter initializer, or (with chance `share`) an earlier one of the same shape, read
        directly or through an Identity node, as torch's exporters write equal tensors once."""
        shape = np.shape(arr)
        earlier = self.by_shape.get(shape, [])
        if earlier and self.rng.random() < self.share:
            return self.reuse(earlier[self.rng.integers(len(earlier))])
        nm = self.init(kind, arr)
        self.by_shape.setdefault(shape, []).append(nm)
        return nm

    def reuse(self, name):
        """Read initializer `name` again, directly or through an Identity node."""
        self.text.append(f"shares {name}")
        return self.node("Identity", [name]) if self.rng.random() < 0.5 else name

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        return out

    def act(self, x, act):
        if act == "relu":
            return self.node("Relu", [x])
        if act == "relu6":  # as torch exports nn.ReLU6: Clip with bounds as inputs
            return self.node("Clip", [x, self.init("lo", np.float32(0)), self.init("hi", np.float32(6))])
        if act == "clip_sym":  # a Clip that is not ReLU6: no zeros, no constraint
            return self.node("Clip", [x, self.init("lo", np.float32(-1)), self.init("hi", np.float32(1))])
        if act == "hardswish":
            return self.node("HardSwish", [x])
        if act == "leakyrelu":
            return self.node("LeakyRelu", [x], alpha=0.1)
        return x

    def conv(self, x, c, cout, k, stride, pads, dil, groups, bias, bn, act):
        fan_in = (c // groups) * k * k
        w = self.rng.standard_normal((cout, c // groups, k, k)) * np.sqrt(2.0 / fan_in)
        ins = [x, self.param("w", w)]
        if bias:
            ins.append(self.param("b", self.rng.standard_normal(cout) * 0.1))
        y = self.node("Conv", ins, kernel_shape=[k, k], strides=[stride] * 2, pads=list(pads),
                      dilations=[dil] * 2, group=groups)
        if bn:
            r = self.rng
            y = self.node("BatchNormalization", [y, self.param("bn_s", r.uniform(0.5, 1.5, cout)),
                                                 self.param("bn_b", r.normal(0, 0.1, cout)),
                                                 self.param("bn_m", r.normal(0, 0.1, cout)),
                                                 self.init("bn_v", r.uniform(0.5, 2.0, cout))], epsilon=1e-5)
        self.text.append(f"conv {c}->{cout} k{k} s{stride} p{list(pads)} d{dil} g{groups}"
                         f"{' bias' if bias else ''}{' bn' if bn else ''} {act}")
        return self.act(y, act)

    def gemm(self, x, fin, fout, act):
        w = self.rng.standard_normal((fout, fin)) * np.sqrt(2.0 / fin)
        y = self.node("Gemm", [x, self.param("fw", w), self.param("fb", self.rng.standard_normal(fout) * 0.1)],
                      transB=1)
        self.text.append(f"gemm {fin}->{fout} {act}")
        return self.act(y, act)

    def tied(self, x, shape, reps, act, conv):
        """`reps` layers that read one weight and one bias (tied weights): a c->c conv (shape
        (c, c, k, k)) or a Gemm (shape (f, f))."""
        fan_in = int(np.prod(shape[1:]))
        w = self.init("tw", self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))
        bias = self.init("tb", self.rng.standard_normal(shape[0]) * 0.1)
        for r in range(reps):
            ins = [x, w if r == 0 else self.reuse(w), bias if r == 0 else self.reuse(bias)]
            if conv:
                k = shape[2]
                x = self.act(self.node("Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4), act)
            else:
                x = self.act(self.node("Gemm", ins, transB=1), act)
        self.text.append(f"tied {'conv' if conv else 'gemm'} {shape} x{reps} {act}")
        return x


def _conv_out(size, k, stride, p0, p1, dil):
    return (size + p0 + p1 - dil * (k - 1) - 1) // stride + 1


@st.composite
def conv_params(draw, c, h, w):
    """A conv that fits an input of c channels and h x w pixels."""
    kind = draw(st.sampled_from(["plain", "plain", "pointwise", "depthwise", "grouped"]))
    k = 1 if kind == "pointwise" else draw(st.sampled_from([1, 2, 3, 3, 3, 5]))
    dil = draw(st.sampled_from([1, 1, 1, 2])) if k > 1 else 1
    span = dil * (k - 1) + 1
    stride = 1 if kind == "pointwise" else draw(st.sampled_from([1, 1, 2, 3]))
    pmax = max(0, span // 2)
    if kind == "pointwise" or pmax == 0:
        pads = (0, 0, 0, 0)
    elif draw(st.booleans()):
        p = draw(st.integers(0, pmax))
        pads = (p, p, p, p)
    else:
        pads = tuple(draw(st.integers(0, pmax)) for _ in range(4))
    if _conv_out(h, k, stride, pads[0], pads[2], dil) < 1 or _conv_out(w, k, stride, pads[1], pads[3], dil) < 1:
        k, dil, stride, pads = 1, 1, 1, (0, 0, 0, 0)
    if kind == "depthwise":
        groups, cout = c, c
    elif kind == "grouped":
        divs = [g for g in range(2, c + 1) if c % g == 0]
        groups = draw(st.sampled_from(divs)) if divs else 1
        cout = groups * draw(st.integers(1, max(1, 16 // groups)))
    else:
        groups, cout = 1, draw(CHANNELS)
    return dict(cout=cout, k=k, stride=stride, pads=pads, dil=dil, groups=groups,
                bias=draw(st.booleans()) or kind != "plain", bn=draw(st.integers(0, 4)) == 0,
                act=draw(st.sampled_from(ACTS)))


@dataclass
class Case:
    """One generated model and batch: ONNX bytes, inputs x (NCHW), labels y, a readable summary."""

    onnx_bytes: bytes
    x: np.ndarray
    y: np.ndarray
    summary: str

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.onnx_bytes)
        return path


@st.composite
def cases(draw, max_batch: int = 17, sizes: Tuple[int, int] = (5, 32), max_blocks: int = 5):
    """A random graph plus a batch to train it on."""
    seed = draw(st.integers(0, 2**32 - 1))
    b = _Builder(np.random.default_rng(seed), share=draw(st.sampled_from([0.0, 0.0, 0.3, 0.7])))
    n = draw(st.integers(1, max_batch))
    c0 = draw(st.sampled_from([1, 2, 3, 3, 4, 5, 8]))
    h = draw(st.integers(*sizes))
    w = draw(st.sampled_from([h, h, draw(st.integers(*sizes))]))
    x, c = "input", c0
    b.text.append(f"input {n}x{c0}x{h}x{w}")
    values = [(x, c, h, w)]  # candidates for fan-out
    for _ in range(draw(st.integers(1, max_blocks))):
        block = draw(st.sampled_from(["conv", "conv", "conv", "pool", "residual", "fork", "tied"]))
        if block == "conv":
            # sometimes read an earlier value again: it then feeds two consumers
            src = draw(st.sampled_from(values)) if draw(st.integers(0, 3)) == 0 else (x, c, h, w)
            x, c, h, w = src
            p = draw(conv_params(c, h, w))
            x = b.conv(x, c, **p)
            h = _conv_out(h, p["k"], p["stride"], p["pads"][0], p["pads"][2], p["dil"])
            w = _conv_out(w, p["k"], p["stride"], p["pads"][1], p["pads"][3], p["dil"])
            c = p["cout"]
        elif block == "pool" and min(h, w) >= 2:
            k = draw(st.integers(2, min(3, h, w)))
            s = draw(st.integers(1, 2))
            p = draw(st.integers(0, k // 2))
            ceil = int(draw(st.booleans()))
            if draw(st.booleans()):
                x = b.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)
                kind = "max"
            else:
                x = b.node("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil,
                           count_include_pad=int(draw(st.booleans())))
                kind = "avg"
            b.text.append(f"{kind}pool k{k} s{s} p{p} ceil{ceil}")
            h, w = (_pool_dim(h, k, s, p, ceil), _pool_dim(w, k, s, p, ceil))
        elif block == "residual":
            act = draw(st.sampled_from(ACTS))
            y = b.conv(x, c, c, 3, 1, (1, 1, 1, 1), 1, 1, True, False, act)
            k2 = draw(st.sampled_from([1, 3]))
            y = b.conv(y, c, c, k2, 1, (k2 // 2,) * 4, 1, 1, True, False, "none")
            x = b.act(b.node("Add", [y, x]), draw(st.sampled_from(ACTS)))
            b.text.append("residual add")
        elif block == "tied":
            k = draw(st.sampled_from([1, 3]))
            x = b.tied(x, (c, c, k, k), draw(st.integers(2, 5)), draw(st.sampled_from(ACTS)), conv=True)
        elif block == "fork":
            # one value, two consumers, merged again
            c2 = draw(CHANNELS)
            y1 = b.conv(x, c, c2, 3, 1, (1, 1, 1, 1), 1, 1, True, False, draw(st.sampled_from(ACTS)))
            y2 = b.conv(x, c, c2, 1, 1, (0, 0, 0, 0), 1, 1, True, False, draw(st.sampled_from(ACTS)))
            x, c = b.act(b.node("Add", [y1, y2]), draw(st.sampled_from(ACTS))), c2
            b.text.append("fork add")
        values.append((x, c, h, w))
    classes = draw(st.integers(2, 7))
    if c * h * w <= 300 and draw(st.booleans()):
        x = b.node("Flatten", [x], axis=1)
        fin = c * h * w
        b.text.append("flatten")
    else:
        x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
        fin = c
        b.text.append("gap flatten")
    if draw(st.booleans()):
        hid = draw(CHANNELS)
        x = b.gemm(x, fin, hid, draw(st.sampled_from(ACTS)))
        fin = hid
        if draw(st.integers(0, 2)) == 0:
            x = b.tied(x, (hid, hid), draw(st.integers(2, 4)), draw(st.sampled_from(ACTS)), conv=False)
    x = b.gemm(x, fin, classes, "none")
    graph = helper.make_graph(b.nodes, "generated",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", c0, None, None])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", classes])], b.inits)
    graph.input[0].type.tensor_type.shape.dim[2].dim_value = values[0][2]
    graph.input[0].type.tensor_type.shape.dim[3].dim_value = values[0][3]
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data_rng = np.random.default_rng(seed ^ 0x5EED)
    xs = data_rng.standard_normal((n, c0, values[0][2], values[0][3])).astype(np.float32)
    if draw(st.booleans()):
        xs = np.maximum(xs, 0)  # a sparse network input, as after a ReLU
    ys = data_rng.integers(0, classes, n)
    return Case(model.SerializeToString(), xs, ys, "; ".join(b.text))


def _pool_dim(size, k, s, p, ceil):
    span = size + 2 * p - k
    o = (-(-span // s) if ceil else span // s) + 1
    if ceil and (o - 1) * s >= size + p:
        o -= 1
    return o
