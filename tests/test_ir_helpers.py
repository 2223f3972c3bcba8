"""The graph helpers the IR owns (Model.producer, Model.needs_grad), on generated graphs against
definitions written out plainly, and their users agreeing with them."""
import numpy as np
from hypothesis import given, settings, strategies as st

from edgetune.runtime.ir import Model, Node

OPS = ("conv", "relu", "flatten", "reshape", "maxpool", "add", "batchnorm")


@st.composite
def graphs(draw):
    """A random topologically ordered graph: each node reads one or two earlier values."""
    values, nodes, params = ["input"], [], {}
    for i in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(OPS))
        ins = [draw(st.sampled_from(values))]
        if op == "add":
            ins.append(draw(st.sampled_from(values)))
        p = {}
        if op in ("conv", "batchnorm"):
            p = {"W": f"w{i}"}
            params[f"w{i}"] = np.zeros(1, np.float32)
        nodes.append(Node(f"n{i}", op, ins, f"v{i}", p, {}, op))
        values.append(f"v{i}")
    trainable = draw(st.lists(st.sampled_from(sorted(params) or ["none"]), unique=True))
    return Model(nodes, params, "input", (None, 1), values[-1]), trainable


def _ancestors(model, value):
    """Every node `value` depends on, found by walking the graph backwards."""
    made = {n.output: n for n in model.nodes}
    seen, todo = [], [value]
    while todo:
        n = made.get(todo.pop())
        if n is not None and n not in seen:
            seen.append(n)
            todo.extend(n.inputs)
    return seen


@settings(max_examples=200)
@given(graphs())
def test_needs_grad_is_a_trainable_parameter_upstream(case):
    model, trainable = case
    needed = model.needs_grad(trainable)
    for v in ["input"] + [n.output for n in model.nodes]:
        want = any(p in trainable for n in _ancestors(model, v) for p in n.params.values())
        assert needed[v] == want, v


@settings(max_examples=200)
@given(graphs())
def test_producer_looks_through_reshapes_only(case):
    model, _ = case
    made = {n.output: n for n in model.nodes}
    for v in ["input"] + [n.output for n in model.nodes]:
        p = model.producer(v)
        chain = made.get(v)
        while chain is not None and chain.op in ("flatten", "reshape"):
            assert p is not chain
            chain = made.get(chain.inputs[0])
        assert p is chain
        assert p is None or p.op not in ("flatten", "reshape")


def test_engines_and_layer_stats_use_the_ir_helpers():
    """The three old copies of 'does anything upstream need a gradient' are gone."""
    from edgetune.runtime import layer_stats
    from edgetune.runtime.engines.dense import DenseEngine
    from edgetune.runtime.engines.native import NativeEngine

    assert not hasattr(DenseEngine, "_needs_grad") and not hasattr(NativeEngine, "_needs_grad")
    assert not hasattr(layer_stats, "_needs_input_grad")
