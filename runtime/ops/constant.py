"""Constant: a value for other nodes' constant inputs (Clip bounds, Reshape targets, ...). It
leaves no IR node; runtime/onnx_batch.py turns most of them into initializers before import."""
from __future__ import annotations

import numpy as np

from . import Op, register


class Constant(Op):
    name = "constant"
    onnx_ops = ("Constant",)
    rule = "a constant: no activation"

    def import_onnx(self, imp, node, i, a):
        from onnx import numpy_helper

        if "value" in a:
            imp.consts[node.output[0]] = numpy_helper.to_array(a["value"])
        elif "value_float" in a:
            imp.consts[node.output[0]] = np.array(a["value_float"], np.float32)
        elif "value_floats" in a:
            imp.consts[node.output[0]] = np.array(a["value_floats"], np.float32)
        elif "value_int" in a:
            imp.consts[node.output[0]] = np.array(a["value_int"], np.int64)
        elif "value_ints" in a:
            imp.consts[node.output[0]] = np.array(a["value_ints"], np.int64)
        else:
            imp.fail(f"Constant node {node.name!r}: unsupported value attribute")


register(Constant())
