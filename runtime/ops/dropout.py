"""Dropout and Identity: exported graphs are inference graphs, so both pass their input through
(fine-tuning keeps Dropout off, as documented). They leave no IR node."""
from __future__ import annotations

from . import Op, register


class Dropout(Op):
    name = "dropout"
    onnx_ops = ("Dropout", "Identity")
    rule = "an alias of its input: its zeros and G are its input's"

    def import_onnx(self, imp, node, i, a):
        if node.op_type == "Identity" and node.input[0] in imp.consts:
            imp.consts[node.output[0]] = imp.consts[node.input[0]]
            return
        if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
            imp.fail(f"Dropout node {node.name!r}: the mask output is not supported")
        imp.alias[node.output[0]] = imp.value(node.input[0])


register(Dropout())
