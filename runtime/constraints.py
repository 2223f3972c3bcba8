"""Which activation gives which non-zero position constraint: the one table.

docs/ARCHITECTURE.md ("Position constraints") explains the idea. Every consumer reads this
table: the analytic layer statistics (layer_stats), `edgetune info`, the accelerator model
(`edgetune simulate` and the emulator's accounting, runtime/accel) and the emulator's HELLO
capabilities. The C++ kernels decide the same things in native/act.hpp (kind_of,
bits_per_elem); tests/test_constraints.py checks them against this table for every op.

A rule says, for the values `a = f(z)` an activation produces:

* ``constrained``: the zeros of ``a`` are known when FP produces it, so FP and WG of the
  consumer skip them and BP computes errors only inside ``G``;
* ``G``: where an error can pass back through ``f`` (``f'(z) != 0`` is inside it);
* the stored form FP keeps for BP and WG: ``state_bits`` per element plus the values
  (``"nonzero"``: the packed non-zeros of ``a``; ``"dense"``: every value).

``kernel_bits`` is what the C++ kernels keep per element beside the values. It equals
``state_bits`` for the constrained rules; for LeakyReLU and Clip with other bounds they keep
the state of ``f'`` as bits too (a convenience: ``f'`` is also recoverable from ``a``), and an
analysed input's positions live in the plan's index lists instead of mask bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import numpy as np


def _all(z, attrs):
    return np.ones(np.shape(z), bool)


@dataclass(frozen=True)
class Rule:
    """One row of the table (see the module docstring)."""

    name: str
    constrained: bool
    state_bits: int
    values: str                       # "nonzero" | "dense"
    g_text: str
    stored_text: str
    kernel_bits: int
    native: Optional[int]             # activation code of native/info.hpp (enum Act); None: no fused kernel
    _g: Callable = _all

    def g_mask(self, z, attrs=None) -> np.ndarray:
        """G on the pre-activation z: where an error can pass back through the activation."""
        return self._g(np.asarray(z), attrs or {})

    def stored_values(self, size: int, nnz: int) -> int:
        """How many values the stored form keeps for an activation of `size` elements, `nnz` non-zero."""
        return nnz if self.values == "nonzero" else size

    def stored_bytes(self, size: int, nnz: int, elem_bytes: int = 4) -> float:
        """Bytes of the stored form: the state bits plus the kept values (a fraction of a byte
        when the bits do not fill one; one tensor on its own takes math.ceil of it)."""
        return size * self.state_bits / 8 + self.stored_values(size, nnz) * elem_bytes

    @property
    def restricts_g(self) -> bool:
        """True when G is not everything: BP then reads the state bits to find it."""
        return self._g is not _all

    @property
    def text(self) -> str:
        """One line for `edgetune info` and the report: the rule for G and for the stored form."""
        head = f"G = {self.g_text}" if self.constrained else "no constraint (dense)"
        return f"{self.name}: {head}; keep {self.stored_text}"


def _clip_g(z, attrs):
    return (z > attrs["min"]) & (z < attrs["max"])


# the native codes mirror native/info.hpp: ACT_INPUT -1, NONE 0, RELU 1, CLIP 2, HSWISH 3, LEAKY 4, SIGMOID 5
RELU = Rule("ReLU", True, 1, "nonzero", "A", "1-bit mask + packed non-zeros of a", 1, 1,
            lambda z, at: z > 0)
RELU6 = Rule("ReLU6 (Clip min=0, max>0)", True, 2, "nonzero", "A minus saturated (0 < z < max)",
             "2-bit state (zero, linear, saturated) + packed non-zeros of a", 2, 2, _clip_g)
HARDSWISH = Rule("hard-swish", True, 2, "nonzero", "z > -3 (A up to z = 0)",
                 "2-bit region (zero, curved, identity) + z where curved, a where identity", 2, 3,
                 lambda z, at: z > -3)
CLIP = Rule("Clip (other bounds)", False, 0, "dense", "all", "dense a", 2, 2)
HARDSIGMOID = Rule("hard-sigmoid", False, 0, "dense", "all", "dense a", 0, None)
LEAKYRELU = Rule("LeakyReLU", False, 0, "dense", "all", "dense a", 1, 4)
SIGMOID = Rule("Sigmoid", False, 0, "dense", "all", "dense a", 0, 5)
NONE = Rule("no activation", False, 0, "dense", "all", "dense z", 0, 0)
# a tensor no activation produced (network input, pooling, Add, BatchNorm): its zeros are found
# by analysing it once (the kernels' analyze_input), so FP and WG still skip them; G is everything
INPUT = Rule("analysed input", True, 1, "nonzero", "all", "1-bit mask + packed non-zeros", 0, -1)

# IR activation op -> its rule (clip: see rule_for)
RULES: Dict[str, Rule] = {"relu": RELU, "clip": CLIP, "hardswish": HARDSWISH, "hardsigmoid": HARDSIGMOID,
                          "leakyrelu": LEAKYRELU, "sigmoid": SIGMOID}
ACTIVATION_OPS = tuple(RULES)


def rule_for(op: Optional[str], attrs: Optional[dict] = None) -> Rule:
    """The rule of an IR activation op (None: no activation). Clip is ReLU6-like, and so
    constrained, only with min == 0 and max > 0 (the kernels' condition, native/act.hpp)."""
    if op is None:
        return NONE
    if op == "clip":
        at = attrs or {}
        return RELU6 if at.get("min") == 0 and at.get("max", 0) > 0 else CLIP
    try:
        return RULES[op]
    except KeyError:
        raise ValueError(f"{op!r} is not an activation op (known: {', '.join(ACTIVATION_OPS)})") from None


def rule_of_node(node) -> Rule:
    """The rule of an activation node (None: no activation)."""
    return NONE if node is None else rule_for(node.op, node.attrs)


def input_rule(producer) -> Rule:
    """The rule of a Conv/Gemm input, given the node that produced it (through reshapes, see
    Model.producer): an activation's own rule, else the analysed-input rule."""
    if producer is not None and producer.op in RULES:
        return rule_of_node(producer)
    return INPUT


# A gate multiplies an activation x elementwise (Mul, broadcast over H and W in a
# squeeze-and-excitation block, or x * Sigmoid(x) for SiLU). Which zeros the product has, by the
# activation that made the gate:
#  * positive (Sigmoid): x * s is zero exactly where x is (up to underflow of s, which only adds
#    zeros), so x's zeros pass through the gate;
#  * can be 0 (HardSigmoid, and any other): the product also has zeros where s = 0, and those are
#    known only once the gate's FP has run; the product is analysed like any tensor no activation
#    made (its zeros found by the kernels' analyze_input), and its G is everything.
# Either way the result is exact; only how much is skipped differs.
GATE_POSITIVE = ("sigmoid",)


def gate_rule(gate) -> str:
    """How zeros pass through a Mul whose factor `gate` (a node, None when no activation made it)
    gates the other factor; for `edgetune info` and the report."""
    op = None if gate is None else gate.op
    if op in GATE_POSITIVE:
        return f"{RULES[op].name} gate (> 0): keeps the other factor's zeros; G = all"
    if op == "hardsigmoid":
        return ("hard-sigmoid gate (can be 0): zeros of the other factor plus where the gate is 0, known only "
                "after the gate's FP: analysed, dense G")
    return "product of two values: the zeros of either; analysed, dense G"


def capabilities() -> dict:
    """What the device keeps per activation op, for HELLO (PROTOCOL.md section 5)."""
    out = {}
    for op in ACTIVATION_OPS:
        r = RULES[op]
        out[op] = "none" if not r.constrained else r.stored_text
    out["clip"] = f"{RELU6.stored_text} when min = 0 and max > 0, else none"
    return out
