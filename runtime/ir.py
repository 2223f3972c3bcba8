"""Model IR: a topologically ordered list of normalised nodes plus named parameters.

Values flowing between nodes are activations (NCHW or (N, F)); parameters are
float32 arrays keyed by their ONNX initializer names, so gradients map straight
back onto the ONNX file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from .constraints import ACTIVATION_OPS  # noqa: F401  (re-exported: the activation ops of the IR)
from .errors import UsageError

# Normalised op -> parameter roles that are trained (others are frozen buffers).
TRAINABLE_ROLES = {"conv": ("W", "B"), "gemm": ("W", "B"), "batchnorm": ("scale", "B"),
                   "add_param": ("B",)}
WEIGHT_OPS = ("conv", "gemm")
# ops that only re-label a tensor's shape: the values, and so masks and constraints, pass unchanged
RESHAPE_OPS = ("flatten", "reshape")


@dataclass
class Node:
    """One normalised operation. `params` maps a role (W, B, scale...) to an initializer name."""

    name: str
    op: str
    inputs: List[str]
    output: str
    params: Dict[str, str] = field(default_factory=dict)
    attrs: Dict[str, object] = field(default_factory=dict)
    onnx_op: str = ""


@dataclass
class Model:
    """A trainable graph imported from ONNX."""

    nodes: List[Node]
    params: Dict[str, np.ndarray]
    input_name: str
    input_shape: Tuple[Optional[int], ...]
    output_name: str
    final: Optional[str] = None  # "softmax"/"logsoftmax" dropped from the training graph
    onnx_model: object = None
    source: str = ""
    notes: List[str] = field(default_factory=list)   # what import rewrote (see onnx_batch)
    export_batch: Optional[int] = None                # the batch the file was exported with, if fixed
    metadata: Dict[str, str] = field(default_factory=dict)   # the file's metadata_props

    def weight_layers(self) -> List[Node]:
        """Conv and Gemm nodes in topological order: the unit of --train-layers."""
        return [n for n in self.nodes if n.op in WEIGHT_OPS]

    def param_nodes(self) -> List[Node]:
        """Every node that owns parameters."""
        return [n for n in self.nodes if n.params]

    def trainable_names(self, spec: str = "all") -> List[str]:
        """Initializer names trained under `spec`: 'all' or 'last:K' (K last Conv/Gemm layers
        plus the BatchNorm/bias nodes that follow the first of them)."""
        nodes = self.param_nodes()
        if spec != "all":
            k = parse_last_k(spec)
            layers = self.weight_layers()
            if k > len(layers):
                raise UsageError(f"--train-layers {spec}: the model has only {len(layers)} Conv/Gemm layers")
            first = self.nodes.index(layers[-k])
            nodes = [n for n in nodes if self.nodes.index(n) >= first]
        names: List[str] = []
        for n in nodes:
            for role in TRAINABLE_ROLES.get(n.op, ()):
                if role in n.params and n.params[role] not in names:
                    names.append(n.params[role])
        return names

    def param_readers(self) -> Dict[str, List[Tuple[Node, str]]]:
        """Initializer name -> every (node, role) that reads it as a parameter. A name with several
        readers is shared (tied weights, or equal tensors the exporter merged into one): its
        gradient is the sum of its readers' gradients, and every engine adds them up."""
        readers: Dict[str, List[Tuple[Node, str]]] = {}
        for n in self.nodes:
            for role, name in n.params.items():
                readers.setdefault(name, []).append((n, role))
        return readers

    def consumers(self, value: str) -> List[Node]:
        """Nodes that read `value`."""
        return [n for n in self.nodes if value in n.inputs]

    def activation_after(self, node: Node) -> Optional[Node]:
        """The activation node applied directly (and only) to `node`'s output, if any."""
        users = self.consumers(node.output)
        if len(users) == 1 and users[0].op in ACTIVATION_OPS and node.output != self.output_name:
            return users[0]
        return None

    def producer(self, value: str) -> Optional[Node]:
        """The node whose values `value` carries, looking through flatten/reshape (they move no
        value, so masks and constraints survive them); None for the model input."""
        made = {n.output: n for n in self.nodes}
        node = made.get(value)
        while node is not None and node.op in RESHAPE_OPS:
            node = made.get(node.inputs[0])
        return node

    def needs_grad(self, trainable) -> Dict[str, bool]:
        """Value name -> whether its gradient is needed, i.e. a trainable parameter lies upstream."""
        want = set(trainable)
        needed = {self.input_name: False}
        for n in self.nodes:
            needed[n.output] = any(needed.get(i, False) for i in n.inputs) or \
                any(v in want for v in n.params.values())
        return needed

    def num_params(self) -> int:
        return int(sum(v.size for v in self.params.values()))


def parse_last_k(spec: str) -> int:
    """Parse 'last:K' into K, with a clear error."""
    if not spec.startswith("last:"):
        raise UsageError(f"--train-layers must be 'all' or 'last:K', got {spec!r}")
    try:
        k = int(spec[5:])
    except ValueError:
        raise UsageError(f"--train-layers {spec!r}: K must be a whole number") from None
    if k < 1:
        raise UsageError(f"--train-layers {spec!r}: K must be at least 1")
    return k
