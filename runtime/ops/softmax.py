"""Softmax and LogSoftmax, only as the model's last node: import drops them from the training
graph (cross-entropy works on the logits) and records which one it was (Model.final)."""
from __future__ import annotations

from . import Op, register


class Softmax(Op):
    def __init__(self, name, onnx_op):
        self.name, self.onnx_ops = name, (onnx_op,)

    def import_onnx(self, imp, node, i, a):
        imp.add(node, i, self.name, [node.input[0]], attrs={"axis": int(a.get("axis", -1))})


register(Softmax("softmax", "Softmax"))
register(Softmax("logsoftmax", "LogSoftmax"))
