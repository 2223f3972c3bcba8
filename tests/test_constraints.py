"""The constraint table (runtime/constraints.py) against everything that decides the same thing.

The C++ kernels decide it in native/act.hpp (kind_of, bits_per_elem, the traits the fused epilogue runs):
for every activation op with a kernel, on generated pre-activations with the boundary points
mixed in, the SparseInfo it builds must say what the table says - constrained or not, G, the
stored bytes. The Python consumers read the table; the tests here fail if one of them grows a
copy of its own again, and if the dense reference or torch put G elsewhere.
"""
import json
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import edgetune._native as nat
from edgetune.firmware_bridge.device_core import SUPPORTED_OPS, EmulatedDevice
from edgetune.runtime import constraints as C
from edgetune.runtime import ir
from edgetune.runtime.engines import dense_ops
from edgetune.runtime.engines.native import FUSABLE, _act_args
from edgetune.runtime.ir import Node

# (IR op, attrs) for every row of the table that an activation node can have
CASES = [("relu", {}), ("clip", {"min": 0.0, "max": 6.0}), ("clip", {"min": 0.0, "max": 2.5}),
         ("clip", {"min": -1.0, "max": 1.0}), ("clip", {"min": 0.5, "max": 6.0}), ("hardswish", {}),
         ("leakyrelu", {"alpha": 0.1}), ("sigmoid", {}), ("hardsigmoid", {"alpha": 1 / 6, "beta": 0.5})]
BOUNDARIES = [-3.0, 0.0, 3.0, 6.0, 2.5, -1.0, 1.0, 0.5, -0.0]


def _node(op, attrs):
    return Node("act", op, ["z"], "a", {}, dict(attrs), op)


@st.composite
def pre_activations(draw):
    """(N, F) float32 pre-activations: normal values with the rules' boundary points mixed in."""
    n, f = draw(st.integers(1, 5)), draw(st.integers(1, 70))
    z = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))).normal(0, 3, (n, f)).astype(np.float32)
    picks = draw(st.lists(st.tuples(st.integers(0, n * f - 1), st.sampled_from(BOUNDARIES)), max_size=12))
    for i, v in picks:
        z.flat[i] = v
    return z


def test_every_activation_op_of_the_ir_has_a_rule():
    assert set(ir.ACTIVATION_OPS) == set(C.RULES)
    assert set(C.ACTIVATION_OPS) <= set(SUPPORTED_OPS)
    for op, attrs in CASES:
        assert C.rule_for(op, attrs) in set(C.RULES.values()) | {C.RELU6}
    with pytest.raises(ValueError):
        C.rule_for("softplus")


def test_fused_kernels_are_exactly_the_rules_with_a_native_code():
    fused = {op for op, r in C.RULES.items() if r.native is not None}
    assert fused == set(FUSABLE)
    for op, attrs in CASES:
        if op in FUSABLE:
            _, info = nat.activate(np.ones((1, 3), np.float32), **_act_args(_node(op, attrs)))
            assert info.act == C.rule_for(op, attrs).native, (op, attrs)


@pytest.mark.parametrize("op,attrs", [c for c in CASES if c[0] in FUSABLE], ids=lambda v: str(v))
@settings(max_examples=40)
@given(z=pre_activations())
def test_kernels_build_what_the_table_says(op, attrs, z):
    rule = C.rule_for(op, attrs)
    a, info = nat.activate(z, **_act_args(_node(op, attrs)))
    assert info.constrained == rule.constrained
    np.testing.assert_array_equal(info.mask_g().reshape(z.shape), rule.g_mask(z, attrs))
    nnz = int(np.count_nonzero(a))
    if rule.constrained:
        assert info.nnz == nnz
    # the kernels keep their bits in 64-bit words, then one float per stored value
    expect = 8 * math.ceil(z.size * rule.kernel_bits / 64) + 4 * rule.stored_values(z.size, nnz)
    assert info.stored_bytes() == expect
    if rule.kernel_bits == rule.state_bits:
        assert rule.stored_bytes(z.size, nnz) <= expect < rule.stored_bytes(z.size, nnz) + 8


@given(x=pre_activations())
def test_an_analysed_input_is_the_input_rule(x):
    x = np.maximum(x, 0)      # zeros to find
    info = nat.analyze_input(x)
    assert info.constrained == C.INPUT.constrained and info.act == C.INPUT.native
    assert info.mask_g().all() and not C.INPUT.restricts_g
    assert info.nnz == np.count_nonzero(x)
    assert info.stored_bytes() == 8 * math.ceil(x.size * C.INPUT.kernel_bits / 64) + 4 * int(np.count_nonzero(x))


@pytest.mark.parametrize("op,attrs", CASES, ids=lambda v: str(v))
@settings(max_examples=40)
@given(z=pre_activations())
def test_g_holds_every_nonzero_derivative_of_the_reference_and_of_torch(op, attrs, z):
    """Outside G the derivative is zero for the dense reference and for torch (G may be larger:
    hard-swish's f' is 0 at z = -1.5, unconstrained rules take G = everything)."""
    g = C.rule_for(op, attrs).g_mask(z, attrs)
    a = dense_ops.act_forward(op, z, attrs)
    assert not np.any(dense_ops.act_derivative(op, z, a, attrs)[~g])
    t = torch.tensor(z, requires_grad=True)
    f = {"relu": torch.relu, "hardswish": torch.nn.functional.hardswish, "sigmoid": torch.sigmoid,
         "leakyrelu": lambda v: torch.nn.functional.leaky_relu(v, attrs.get("alpha", 0.01)),
         "clip": lambda v: torch.nn.functional.hardtanh(v, attrs.get("min"), attrs.get("max")),
         "hardsigmoid": torch.nn.functional.hardsigmoid}[op]
    f(t).sum().backward()
    assert not np.any(t.grad.numpy()[~g])
    if C.rule_for(op, attrs).constrained:       # and inside G torch agrees with the reference
        np.testing.assert_allclose(dense_ops.act_derivative(op, z, a, attrs)[g], t.grad.numpy()[g], rtol=1e-6)


def test_consumers_read_the_table():
    from edgetune.runtime import layer_stats
    from edgetune.runtime.simulate import DEFAULT_CONFIG

    caps = EmulatedDevice().caps()["constraints"]
    assert caps == C.capabilities() and set(caps) == set(C.ACTIVATION_OPS)
    assert caps["hardsigmoid"] == "none" and caps["relu"] == C.RELU.stored_text
    with open(DEFAULT_CONFIG) as f:
        assert "mask_bits" not in json.load(f)
    for name in ("RULES", "CONSTRAINED"):
        assert not hasattr(layer_stats, name)
    z = np.linspace(-5, 7, 97, dtype=np.float32)
    for op, attrs in CASES:
        rule = C.rule_for(op, attrs)
        np.testing.assert_array_equal(layer_stats.g_mask(op, z, attrs), rule.g_mask(z, attrs))
        a = dense_ops.act_forward(op, z, attrs)
        stored = layer_stats.act_bytes(_node(op, attrs), z, a)["stored"]
        assert stored == math.ceil(rule.stored_bytes(z.size, int(np.count_nonzero(a))))


def test_no_other_module_spells_out_the_constrained_ops():
    """A literal tuple of the constrained ops is how the six copies began."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    pattern = '("relu", "clip", "hardswish"'
    for folder in ("runtime", "firmware_bridge", "fleet"):
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        assert pattern not in f.read(), os.path.join(dirpath, name)


def test_disagreements_resolved():
    """The values the table settled where the old copies differed."""
    assert not C.rule_for("hardsigmoid").constrained and C.rule_for("hardsigmoid").state_bits == 0
    assert not C.rule_for("clip", {"min": -1.0, "max": 1.0}).constrained
    assert C.rule_for("clip", {"min": 0.0, "max": 6.0}).state_bits == 2
    z = np.array([-3.0, -2.99, 3.0], np.float32)
    assert list(C.HARDSWISH.g_mask(z)) == [False, True, True]
    # hard-swish keeps a value for every non-zero a (z where curved, a = z where identity)
    assert C.HARDSWISH.stored_values(10, 7) == 7
