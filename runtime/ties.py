"""Initializers that several nodes read (ties), and what fine-tuning does with them.

torch's exporters store equal tensors once. In eval mode BatchNorm folds into the convs, and
while the statistics are fresh every folded bias of one width is the same vector, so the file
keeps one initializer that several convs read (directly, or through Identity nodes, which
import bypasses). Tied weights are real too. The gradient of a tensor that several nodes read
is the sum over its readers; every engine adds them up (`Model.param_readers`).

* By default a tie is kept: the tensor is trained as one, and the ONNX graph is the definition.
  The exported file keeps the tie.
* `untie=True` (`finetune --untie-params`) gives each reader after the first its own copy
  (`NAME__untied1`, ...), for a model whose ties the exporter made by merging equal values: each
  copy is then trained as torch trained its parameter. The exported file has the copies.
* A tensor that one node trains and another reads as a frozen BatchNorm statistic (mean or
  variance) is always split: the statistic gets its own copy (`NAME__frozen`) and keeps its
  values, since edgetune never trains statistics.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .ir import TRAINABLE_ROLES, Model

UNTIED = "__untied"
FROZEN = "__frozen"
_BN_STATS = (3, 4)   # BatchNormalization inputs: X, scale, B, mean, var
_LISTED = 3          # ties named in one import note; the rest are counted


def trained_ties(model: Model) -> Dict[str, List[str]]:
    """Initializer name -> the nodes that train it, for every initializer that more than one node
    trains (its gradient is the sum of theirs)."""
    out = {}
    for name, readers in model.param_readers().items():
        nodes = list(dict.fromkeys(n.name for n, role in readers if _trains(n, role)))
        if len(nodes) > 1:
            out[name] = nodes
    return out


def _trains(node, role) -> bool:
    return role in TRAINABLE_ROLES.get(node.op, ())


def _frozen_clashes(model: Model) -> List[str]:
    """Initializers that one node trains and another reads as a frozen statistic."""
    return [name for name, readers in model.param_readers().items()
            if any(_trains(n, r) for n, r in readers) and not all(_trains(n, r) for n, r in readers)]


def rewrite(model: Model, graph, untie: bool) -> Tuple[Optional[Dict[str, str]], List[str]]:
    """Apply the tie policy to `graph` (the normalised ONNX graph `model` was imported from).

    Returns ({copy name: original name} or None when the graph is unchanged, import notes). The
    caller imports the graph again when it changed."""
    copies: Dict[str, str] = {}
    notes: List[str] = []
    for name in _frozen_clashes(model):
        frozen = _fresh(graph, name + FROZEN, copies)
        copies[frozen] = name
        for node in graph.node:
            if node.op_type == "BatchNormalization":
                node.input[:] = [frozen if i in _BN_STATS and v == name else v for i, v in enumerate(node.input)]
        notes.append(f"split: initializer {name!r} is trained by one node and read as a frozen BatchNorm "
                     f"statistic by another; the statistic keeps its own copy ({frozen!r})")
    ties = trained_ties(model)
    if ties and untie:
        for name in ties:
            for k, node in enumerate(_readers(graph, name)[1:], 1):
                copy = _fresh(graph, f"{name}{UNTIED}{k}", copies)
                copies[copy] = name
                node.input[:] = [copy if v == name else v for v in node.input]
        notes.append(_summary("untied", ties, "each reader after the first now has its own copy "
                              "(NAME__untied1, ...), trained on its own; the exported file has the copies"))
    elif ties:
        notes.append(_summary("tied", ties, "each is trained as one tensor, its gradient the sum over its "
                              "readers (--untie-params gives each reader its own copy)"))
    source = {i.name: i for i in graph.initializer}
    for copy, name in copies.items():
        dup = type(source[name])()
        dup.CopyFrom(source[name])
        dup.name = copy
        graph.initializer.append(dup)
    return (copies or None), notes


def _readers(graph, name) -> list:
    return [n for n in graph.node if name in n.input]


def _fresh(graph, want: str, taken: Dict[str, str]) -> str:
    """`want`, made unique among the graph's initializer and value names."""
    used = {i.name for i in graph.initializer} | set(taken) | {o for n in graph.node for o in n.output}
    name, k = want, 1
    while name in used:
        k += 1
        name = f"{want}_{k}"
    return name


def _summary(verb: str, ties: Dict[str, List[str]], what: str) -> str:
    listed = [f"{name!r} ({len(nodes)} nodes: {', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''})"
              for name, nodes in list(ties.items())[:_LISTED]]
    more = f", and {len(ties) - _LISTED} more" if len(ties) > _LISTED else ""
    head = "1 initializer is" if len(ties) == 1 else f"{len(ties)} initializers are each"
    return f"{verb}: {head} read by several nodes, {', '.join(listed)}{more}: {what}"
