"""edgetune's Flower ClientApp: one node of a fleet (the work is in task.py).

TRAIN: put the global tensors into this node's engine, run `local_fit` on the node's data,
reply with the trained tensors. EVALUATE: score the global tensors on the node's validation
data. With client-side DP (the server sent a clipping norm) Flower's `fixedclipping_mod`
clips the update before it leaves the node. An edgetune error (bad data, wrong model)
becomes an error reply that names the node, so the server reports which node failed.
"""
from __future__ import annotations

import socket

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from edgetune.runtime.errors import EdgetuneError

from .task import RunSettings, evaluate_round, train_round

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training."""
    if KEY_CLIPPING_NORM in msg.content["config"]:
        return fixedclipping_mod(msg, context, _train)
    return _train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the global model on this node's validation data."""
    try:
        settings = RunSettings.from_run_config(context.run_config)
        metrics = evaluate_round(settings, context.node_config, _received(msg))
    except EdgetuneError as exc:
        return _error_reply(msg, context, exc)
    return Message(RecordDict({"metrics": MetricRecord(metrics), "node": _node_record(context)}), reply_to=msg)


def _train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    try:
        settings = RunSettings.from_run_config(context.run_config)
        tensors, metrics = train_round(settings, context.node_config, _received(msg), int(config["server-round"]),
                                       float(config.get("proximal-mu", 0.0)))
    except EdgetuneError as exc:
        return _error_reply(msg, context, exc)
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in tensors.items()}),
                          "metrics": MetricRecord(metrics), "node": _node_record(context)})
    return Message(content, reply_to=msg)


def _received(msg: Message) -> dict:
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


def node_name(context: Context) -> str:
    """How reports name this node: its `name` node config, its partition, or host and node id."""
    cfg = context.node_config
    if cfg.get("name"):
        return str(cfg["name"])
    if "partition-id" in cfg:
        return f"partition {cfg['partition-id']}"
    return f"{socket.gethostname()}/{context.node_id}"


def _node_record(context: Context) -> ConfigRecord:
    return ConfigRecord({"name": node_name(context), "data": str(context.node_config.get("data", ""))})


def _error_reply(msg: Message, context: Context, exc: Exception) -> Message:
    reason = f"node {node_name(context)}: {exc}"
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
