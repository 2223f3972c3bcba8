"""The server's strategy: Flower's FedAvg or FedProx (optionally inside Flower's client-side
fixed-clipping DP wrapper), wrapped by `FleetStrategy`, which records what a report needs.

`FleetStrategy` adds what the plain strategies leave out:
- it waits for the nodes with a timeout (Flower's sampler waits forever);
- it records, per round and per node, the metrics, the tensor bytes that actually travelled
  each way (read from the messages, not assumed) and every failure with the node's reason;
- a round where no node succeeded is an error, never a silently skipped round;
- aggregated tensors stay float32, so every round moves the same bytes.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, FedProx, Strategy

from . import FleetError
from .task import RunSettings

# Metrics a node reports that are averaged over the nodes (weighted by examples); others are per node only.
AVERAGED = ("train-loss", "train-acc", "val-acc", "val-loss")


def build_strategy(settings: RunSettings, on_round: Callable[[dict], None]) -> "FleetStrategy":
    """FedAvg or FedProx over `settings.min_nodes` nodes per round, DP-wrapped if asked."""
    common = dict(fraction_train=1.0, fraction_evaluate=settings.fraction_evaluate,
                  min_train_nodes=settings.min_nodes, min_evaluate_nodes=1 if settings.fraction_evaluate else 0,
                  min_available_nodes=settings.min_nodes,
                  train_metrics_aggr_fn=_average, evaluate_metrics_aggr_fn=_average)
    inner: Strategy
    if settings.strategy == "fedprox":
        inner = FedProx(proximal_mu=settings.proximal_mu, **common)
    else:
        inner = FedAvg(**common)
    if settings.dp_clipping_norm > 0:
        inner = DifferentialPrivacyClientSideFixedClipping(inner, settings.dp_noise_multiplier,
                                                           settings.dp_clipping_norm, settings.min_nodes)
    return FleetStrategy(inner, settings, on_round)


def _average(contents: List[RecordDict], weight_key: str) -> MetricRecord:
    totals: Dict[str, float] = {}
    weight = 0.0
    for c in contents:
        m = c["metrics"]
        w = float(m[weight_key])
        weight += w
        for k in AVERAGED:
            if k in m:
                totals[k] = totals.get(k, 0.0) + w * float(m[k])
    return MetricRecord({k: v / weight for k, v in totals.items()} if weight else {})


def record_bytes(record: ArrayRecord) -> tuple:
    """(tensor bytes, bytes as Flower counts them) of an ArrayRecord: elements x item size, and
    Flower's count, which adds each array's serialisation header and its name."""
    tensor = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record.values())
    return tensor, record.count_bytes()


class FleetStrategy(Strategy):
    """Delegates to `inner` and keeps `self.rounds`: one dict per round (see module docstring)."""

    def __init__(self, inner: Strategy, settings: RunSettings, on_round: Callable[[dict], None]):
        super().__init__()
        self.inner, self.settings, self.on_round = inner, settings, on_round
        self.rounds: Dict[int, dict] = {}
        self.sampled: Dict[int, Dict[str, List[int]]] = {}

    def _round(self, r: int) -> dict:
        return self.rounds.setdefault(r, {"round": r, "clients": [], "evaluation": [], "failures": [],
                                          "bytes_down": 0, "bytes_up": 0, "record_bytes_down": 0,
                                          "record_bytes_up": 0, "sampled": 0, "aggregated": False,
                                          "started": time.time()})

    def summary(self) -> None:
        self.inner.summary()

    def _wait_for_nodes(self, grid: Grid) -> None:
        deadline = time.monotonic() + self.settings.node_wait_timeout
        while len(list(grid.get_node_ids())) < self.settings.min_nodes:
            if time.monotonic() > deadline:
                raise FleetError(f"only {len(list(grid.get_node_ids()))} of {self.settings.min_nodes} nodes "
                                 f"connected within {self.settings.node_wait_timeout:.0f} s")
            time.sleep(0.5)

    def _sent(self, r: int, phase: str, messages: Iterable[Message]) -> List[Message]:
        messages = list(messages)
        self.sampled.setdefault(r, {})[phase] = [m.metadata.dst_node_id for m in messages]
        if phase == "train":
            rec = self._round(r)
            rec["sampled"] = len(messages)
            for m in messages:
                tensor, counted = record_bytes(m.content["arrays"])
                rec["bytes_down"] += tensor
                rec["record_bytes_down"] += counted
        return messages

    def _split(self, r: int, phase: str, replies: Iterable[Message]) -> List[Message]:
        """Record failures (error replies, and nodes that never replied); return the good replies."""
        rec = self._round(r)
        good, seen = [], set()
        for m in replies:
            seen.add(m.metadata.src_node_id)
            if m.has_error():
                rec["failures"].append({"round": r, "phase": phase, "node_id": m.metadata.src_node_id,
                                        "reason": m.error.reason})
            else:
                good.append(m)
        for node in self.sampled.get(r, {}).get(phase, []):
            if node not in seen:
                rec["failures"].append({"round": r, "phase": phase, "node_id": node,
                                        "reason": f"no reply within {self.settings.round_timeout:.0f} s"})
        return good

    # -- training ----------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._wait_for_nodes(grid)
        return self._sent(server_round, "train", self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        rec = self._round(server_round)
        good = self._split(server_round, "train", replies)
        for m in good:
            tensor, counted = record_bytes(m.content["arrays"])
            rec["bytes_up"] += tensor
            rec["record_bytes_up"] += counted
            rec["clients"].append({"node_id": m.metadata.src_node_id, **_node(m),
                                   **{k: v for k, v in m.content["metrics"].items()}})
        if not good:
            raise FleetError(f"round {server_round}: no node finished training; "
                             + "; ".join(f["reason"] for f in rec["failures"]))
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None:
            rec["aggregation_skipped"] = "the strategy did not aggregate this round (see failures)"
            return None, metrics
        rec["aggregated"] = True
        if metrics is not None:
            rec.update({k.replace("-", "_"): float(v) for k, v in metrics.items()})
        return ArrayRecord({k: Array(np.asarray(v.numpy(), dtype=np.float32)) for k, v in arrays.items()}), metrics

    # -- evaluation ----------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.settings.fraction_evaluate:
            self._wait_for_nodes(grid)
        return self._sent(server_round, "evaluate",
                          self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Optional[MetricRecord]:
        replies = list(replies)
        good = self._split(server_round, "evaluate", replies)
        rec = self._round(server_round)
        for m in good:
            rec["evaluation"].append({"node_id": m.metadata.src_node_id, **_node(m),
                                      **{k: v for k, v in m.content["metrics"].items()}})
        metrics = self.inner.aggregate_evaluate(server_round, good) if good else None
        if metrics is not None:
            rec["nodes_val_acc"] = float(metrics.get("val-acc", 0.0))
        return metrics

    def central_result(self, server_round: int, acc: float, loss: float) -> None:
        """The server's own evaluation closes a round: record it and report the round."""
        if server_round == 0:
            return
        rec = self._round(server_round)
        rec["val_acc"], rec["val_loss"] = acc, loss
        rec["seconds"] = time.time() - rec.pop("started")
        self.on_round(rec)


def _node(m: Message) -> dict:
    node = m.content.config_records.get("node")
    return {"name": str(node["name"]), "data": str(node["data"])} if node is not None else {}
