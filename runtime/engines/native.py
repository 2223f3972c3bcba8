"""The native engine: C++ kernels that skip what the activations' non-zero position
constraints make predictable, in FP, BP and WG. Tensors are channels-last inside the
engine; conversion happens only at the input, at flatten boundaries and at the logits.

With dense=True the same kernels iterate densely, so the sparse gain is measured
against the same code."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from edgetune import _native as nat

from . import dense_ops
from .base import Engine
from ..errors import ModelError
from ..ir import ACTIVATION_OPS

F32 = np.float32
# An activation with fewer zeros than this (in A and in G) is planned densely on the next step:
# listing 5% zeros costs more than skipping them saves (bench_cnn_hardswish is 99.5% non-zero).
MIN_SPARSITY = 0.2
# IR activation -> (native code, needs alpha/lo/hi). HardSigmoid has no fused kernel.
FUSABLE = {"relu": "relu", "clip": "clip", "hardswish": "hardswish", "leakyrelu": "leaky_relu",
           "sigmoid": "sigmoid"}


def _act_args(act):
    if act is None:
        return {"act": "none"}
    kw = {"act": FUSABLE[act.op]}
    if act.op == "clip":
        kw.update(lo=max(act.attrs["min"], -3.4e38), hi=min(act.attrs["max"], 3.4e38))
    if act.op == "leakyrelu":
        kw["alpha"] = act.attrs["alpha"]
    return kw


class _Layer:
    """A Conv/Gemm node with its fused activation and its native kernel object."""

    def __init__(self, node, act, model):
        self.node, self.act = node, act
        self.output = act.output if act else node.output
        W = model.params[node.params["W"]]
        kw = _act_args(act)
        if node.op == "conv":
            at = node.attrs
            self.k = nat.ConvLayer(W.shape[1] * at["group"], W.shape[0], list(at["kernel"]), list(at["stride"]),
                                   list(at["pads"]), list(at["dilation"]), at["group"], **kw)
        else:
            fin, fout = (W.shape[1], W.shape[0]) if node.attrs["transB"] else W.shape
            self.k = nat.GemmLayer(fin, fout, **kw)
        self.depthwise = node.op == "conv" and self.k.depthwise
        self.perm = None   # gemm after an NHWC flatten: weight columns reordered CHW -> HWC
        self.inv_perm = None


def _accumulate(grads, name, g):
    """Add a reader's gradient: an initializer that several nodes read (a tie the exporter made,
    or tied weights) gets the sum over its readers."""
    grads[name] = grads[name] + g if name in grads else np.ascontiguousarray(g, F32)


def _activation_bytes(infos) -> dict:
    """What FP keeps for BP and WG: `values` (packed values and state bits) plus `plan` (lists,
    counts, partitions); `stored` is both. `dense` is what keeping every activation in fp32 costs."""
    values = sum(int(i.stored_bytes()) for i in infos)
    plan = sum(int(i.plan_bytes()) for i in infos)
    return {"dense": sum(int(i.dense_bytes()) for i in infos), "stored": values + plan, "values": values,
            "plan": plan}


@dataclass
class _StepState:
    """What FP hands to BP besides the dense arrays: plans, per-node caches, shapes."""

    infos: dict = field(default_factory=dict)    # value -> SparseInfo
    ctx: dict = field(default_factory=dict)      # node name -> what its backward needs
    flat: dict = field(default_factory=dict)     # flattened value -> (h, w, c) of its NHWC source
    shapes: dict = field(default_factory=dict)   # value -> shape of its dense (NHWC) array


class NativeEngine(Engine):
    """Sparse C++ kernels (the default engine)."""

    name = "native"
    options = ("dense", "threads", "auto_dense")
    has_step_counters = True

    def __init__(self, dense: bool = False, threads: Optional[int] = None, auto_dense: bool = True):
        self.dense = bool(dense)
        # sparse mode only: plan an activation densely when its last step had < MIN_SPARSITY zeros
        self.auto_dense = bool(auto_dense) and not self.dense
        self._dense_plan: Dict[str, bool] = {}
        if threads:
            nat.set_num_threads(int(threads))
        if self.dense:
            self.name = "native-dense"

    # -- plan -------------------------------------------------------------------------
    def _prepare(self):
        m = self.model
        self.layers: Dict[str, _Layer] = {}
        fused = set()
        for node in m.nodes:
            if node.op in ("conv", "gemm"):
                act = m.activation_after(node)
                if act is not None and act.op not in FUSABLE:
                    act = None
                self.layers[node.name] = _Layer(node, act, m)
                if act is not None:
                    fused.add(act.name)
        self.steps = [n for n in m.nodes if n.name not in fused]
        self.needs = m.needs_grad(self.trainable)
        self._reads, self._has_info = self._dense_reads()
        self._plan_read = self._plan_readers()
        want = set(self.trainable)
        for lay in self.layers.values():
            lay.k.trainable = any(v in want for v in lay.node.params.values())
        self._totals = {k: {"fp": 0, "bp": 0, "wg": 0} for k in ("dense", "required", "executed")}
        self.last_step: Dict[str, dict] = {}
        self._after_update(list(self.params))

    def _after_update(self, names):
        changed = set(names)
        for lay in self.layers.values():
            if changed.isdisjoint(lay.node.params.values()):
                continue
            self._load_weights(lay)

    def _load_weights(self, lay):
        node, p = lay.node, self.params
        W, B = p[node.params["W"]], p.get(node.params.get("B"))
        if node.op == "gemm":
            at = node.attrs
            W = W if at["transB"] else W.T
            if at["alpha"] != 1.0:
                W = W * F32(at["alpha"])
            if B is not None and at["beta"] != 1.0:
                B = B * F32(at["beta"])
            if lay.perm is not None:
                W = np.take(W, lay.perm, axis=1)
        lay.k.set_weights(np.ascontiguousarray(W, F32), None if B is None else np.ascontiguousarray(B, F32))

    def _set_flatten_perm(self, lay, hwc):
        """A Gemm reading an NHWC tensor flattened in HWC order needs its CHW columns reordered."""
        h, w, c = hwc
        perm = None if h * w == 1 else np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        if (perm is None) != (lay.perm is None) or (perm is not None and not np.array_equal(perm, lay.perm)):
            lay.perm = perm
            lay.inv_perm = None if perm is None else np.argsort(perm)
            self._load_weights(lay)

    # -- forward -------------------------------------------------------------------------
    def predict(self, x):
        plan = dict(self._dense_plan)   # inference must not re-plan training: the plan is step state
        vals, _ = self._forward(np.asarray(x, F32))
        self._dense_plan = plan
        for lay in self.layers.values():   # inference is not a training step: keep it out of the counters
            lay.k.reset_counters()
        return self._logits(vals)

    def _logits(self, vals):
        out = vals[self.model.output_name]
        if out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)

    def _dense_reads(self):
        """value -> how many FP steps read its dense array (not only its plan). A value nobody
        reads densely is never materialised (a conv/gemm then writes no dense output), and a dense
        array is dropped after its last read: every activation kept through the step costs what
        the compressed storage saves."""
        m, steps = self.model, self.steps
        producer = {}
        for n in steps:
            producer[self.layers[n.name].output if n.op in ("conv", "gemm") else n.output] = n
        has_info = {}

        def info_of(v):
            if v not in has_info:
                p = producer.get(v)
                has_info[v] = p is not None and (p.op in ("conv", "gemm") or p.op in FUSABLE or (
                    p.op in ("flatten", "reshape") and info_of(p.inputs[0])))
            return has_info[v]

        reads: Dict[str, int] = {m.output_name: 1}
        for n in reversed(steps):
            if n.op in ("conv", "gemm"):
                src = n.inputs[0]
                dense_in = not info_of(src) or self.layers[n.name].depthwise
                reads[src] = reads.get(src, 0) + int(dense_in)
            elif n.op in ("flatten", "reshape"):
                src = n.inputs[0]
                reads[src] = reads.get(src, 0) + int(reads.get(n.output, 0) > 0 or not info_of(src))
            else:
                for i in n.inputs:
                    reads[i] = reads.get(i, 0) + 1
        for v in list(reads) + list(producer):
            info_of(v)
        return reads, has_info

    def _plan_readers(self):
        """Values whose plan (lists and packed values) some conv/gemm reads, directly or through a
        flatten: a layer output outside this set keeps only its state bits and counts."""
        used, steps = set(), self.steps
        for n in reversed(steps):
            if n.op in ("conv", "gemm"):
                used.add(n.inputs[0])
            elif n.op in ("flatten", "reshape") and n.output in used:
                used.add(n.inputs[0])
        return used

    def _forward(self, x):
        """Run FP. vals: value -> NHWC array (or (N, F)), only while something still reads it;
        the step state holds infos (value -> SparseInfo), per-node caches and every value's shape."""
        for lay in self.layers.values():   # the previous step's plans go before this step's are built
            lay.k.release()
        x_in = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x
        vals = {self.model.input_name: x_in}
        st = _StepState(shapes={self.model.input_name: x_in.shape})
        infos, ctx, flat, shapes = st.infos, st.ctx, st.flat, st.shapes
        left = dict(self._reads)
        keep = self.model.output_name

        def read(v):
            left[v] = left.get(v, 0) - 1
            if left[v] <= 0 and v != keep:
                vals.pop(v, None)

        for node in self.steps:
            op, at = node.op, node.attrs
            src = node.inputs[0]
            if op in ("conv", "gemm"):
                lay = self.layers[node.name]
                if op == "gemm":
                    self._set_flatten_perm(lay, flat.get(src, (1, 1, shapes[src][-1])))
                inp = infos.get(src)
                if inp is None:
                    arr = np.ascontiguousarray(vals[src])
                    inp = nat.analyze_input(arr, self.dense, MIN_SPARSITY if self.auto_dense else 0.0)
                    infos[src] = inp
                # depthwise kernels read their input densely: hand them the array FP already has
                xd = vals.get(src) if lay.depthwise and not inp.dense and len(shapes[src]) == 4 else None
                want_a = self._reads.get(lay.output, 0) > 0
                a, info = lay.k.forward(inp, self.dense, want_a=want_a,
                                        out_dense=self._dense_plan.get(lay.output, False), x_dense=xd,
                                        keep_values=lay.output in self._plan_read)
                self._note_density(lay.output, info)
                infos[lay.output] = info
                n_, h_, w_, c_ = info.shape
                shapes[lay.output] = (n_, c_) if op == "gemm" else (n_, h_, w_, c_)
                if want_a:
                    vals[lay.output] = a
                ctx[node.name] = src
                if not self._has_info.get(src, False) or lay.depthwise:
                    read(src)
                continue
            if op in ("flatten", "reshape"):
                flat_out = self._flatten(node, shapes[src], flat, src)
                shapes[node.output] = flat_out
                if src in infos:
                    infos[node.output] = infos[src]   # the gemm flattens the plan itself
                if self._reads.get(node.output, 0) > 0 or not self._has_info.get(src, False):
                    vals[node.output] = vals[src].reshape(flat_out)
                    read(src)
                ctx[node.name] = shapes[src]
                continue
            x0 = vals[src]
            if op in ACTIVATION_OPS:
                if op in FUSABLE:
                    a, info = nat.activate(np.ascontiguousarray(x0),
                                           dense=self.dense or self._dense_plan.get(node.output, False),
                                           **_act_args(node))
                    self._note_density(node.output, info)
                    infos[node.output] = info
                    ctx[node.name] = info
                else:
                    a = dense_ops.act_forward(op, x0, at)
                    ctx[node.name] = (x0, a)
                vals[node.output] = a
            elif op == "add":
                vals[node.output] = nat.add(np.ascontiguousarray(x0), np.ascontiguousarray(vals[node.inputs[1]]))
            elif op == "add_param":
                vals[node.output] = x0 + self._bias_nhwc(node, x0.ndim)
            elif op == "maxpool":
                y, arg = nat.maxpool_forward(x0, list(at["kernel"]), list(at["stride"]), list(at["pads"]),
                                             bool(at["ceil_mode"]))
                vals[node.output], ctx[node.name] = y, (arg, x0.shape)
            elif op == "avgpool":
                vals[node.output] = nat.avgpool_forward(x0, list(at["kernel"]), list(at["stride"]), list(at["pads"]),
                                                        bool(at["ceil_mode"]), bool(at["count_include_pad"]))
                ctx[node.name] = x0.shape
            elif op == "globalavgpool":
                y = nat.global_avgpool_forward(x0)
                vals[node.output] = y.reshape(y.shape[0], 1, 1, y.shape[1]) if at["keepdims"] else y
                ctx[node.name] = x0.shape
            elif op == "batchnorm":
                g = lambda r: self.params[node.params[r]]  # noqa: E731
                vals[node.output] = nat.batchnorm_forward(x0, g("scale"), g("B"), g("mean"), g("var"), at["epsilon"])
                ctx[node.name] = x0
            else:
                raise ModelError(f"native engine: op {node.onnx_op} ({node.name}) is not supported; use --engine dense")
            shapes[node.output] = vals[node.output].shape
            for i in node.inputs:
                read(i)
        return vals, st

    def dense_planned(self) -> List[str]:
        """Activations that the last step found too dense to list (< MIN_SPARSITY zeros): they are
        planned densely, and their consumers iterate them densely, from the next step on."""
        return sorted(k for k, v in self._dense_plan.items() if v)

    def plan_state(self) -> dict:
        """The dense/listed plan of each constrained activation for the next step: a dense-planned
        step rounds differently from a listed one, so a resumed run needs the plan back."""
        return {"dense_plan": dict(self._dense_plan)}

    def set_plan_state(self, state: dict) -> None:
        """Restore `plan_state()`; an empty state (an older checkpoint) starts with no plan."""
        self._dense_plan = {str(k): bool(v) for k, v in (state or {}).get("dense_plan", {}).items()}

    def _note_density(self, name, info):
        """Plan `name` densely on the next step when this step found too few zeros to skip."""
        if self.auto_dense and info.constrained:
            self._dense_plan[name] = max(info.sparsity, info.g_sparsity) < MIN_SPARSITY

    def _flatten(self, node, shape, flat, src):
        """The (N, F) shape of a Flatten/Reshape of `shape`; records the HWC order for the Gemm after it."""
        if len(shape) == 2:
            if node.op == "reshape" and dense_ops.reshape_target(node.attrs["shape"], shape) != tuple(shape):
                raise ModelError(f"native engine: Reshape {node.name} to {node.attrs['shape']} is not supported; "
                                 "use --engine dense")
            flat[node.output] = flat.get(src, (1, 1, shape[1]))
            return tuple(shape)
        n, h, w, c = shape
        if node.op == "reshape" and dense_ops.reshape_target(node.attrs["shape"], (n, c, h, w)) != (n, c * h * w):
            raise ModelError(f"native engine: Reshape {node.name} to {node.attrs['shape']} is not supported; "
                             "use --engine dense")
        flat[node.output] = (h, w, c)
        return (n, h * w * c)   # HWC order; the consuming Gemm permutes its weights

    def _bias_nhwc(self, node, ndim):
        b = self.params[node.params["B"]]
        if ndim == 4 and b.ndim >= 3:
            return np.moveaxis(b.reshape(b.shape[-3:]), 0, -1)
        return b

    # -- backward ---------------------------------------------------------------------------
    def _forward_backward(self, x, y):
        t0 = time.perf_counter()
        vals, st = self._forward(np.asarray(x, F32))
        logits = self._logits(vals)
        del vals   # BP works from the plans in st (and the few arrays its caches hold)
        loss, dlogits = self._loss(logits, np.asarray(y))
        t_fp = time.perf_counter() - t0
        grads, t_bp, t_wg = self._backward(st, dlogits)
        self._harvest_counters()
        return loss, grads, logits, {"fp": t_fp, "bp": t_bp, "wg": t_wg}

    def _backward(self, st, dlogits):
        want = set(self.trainable)
        out = self.model.output_name
        infos, ctx, shapes = st.infos, st.ctx, st.shapes
        d = {out: dlogits if len(shapes[out]) == 2 else np.ascontiguousarray(dlogits.transpose(0, 2, 3, 1))}
        grads: Dict[str, np.ndarray] = {}
        t_bp = t_wg = 0.0

        def push(name, g):
            if g is not None and self.needs.get(name, False):
                d[name] = d[name] + g if name in d else g

        for node in reversed(self.steps):
            if node.op in ("conv", "gemm"):
                lay = self.layers[node.name]
                ga = d.pop(lay.output, None)
                if ga is None:
                    continue
                ga = np.ascontiguousarray(ga, F32)
                src = ctx[node.name]
                need_in = self.needs.get(src, False)
                if not (need_in or lay.k.trainable):
                    continue
                # one call shares the d = grad_a * f'(z) prologue; the kernel times its phases itself
                t0 = time.perf_counter()
                gin, dW, dB = lay.k.backward(ga, need_in, None, need_in and self._maskable(src, infos),
                                             lay.k.trainable)
                t_call = time.perf_counter() - t0
                t_layer_wg = min(lay.k.phase_ms()["wg"] * 1e-3, t_call)
                t_wg += t_layer_wg
                t_bp += t_call - t_layer_wg
                if need_in:
                    push(src, gin.reshape(shapes[src]))
                if lay.k.trainable:
                    self._collect(lay, dW, dB, want, grads)
                continue
            g = d.pop(node.output, None)
            if g is None:
                continue
            t0 = time.perf_counter()
            for name, gx in self._bwd_op(node, g, ctx, want, grads):
                push(name, gx)
            t_bp += time.perf_counter() - t0
        return grads, t_bp, t_wg

    def _maskable(self, src, infos):
        """Mask the input gradient by G only where src is a constrained activation output."""
        info = infos.get(src)
        return info is not None and info.constrained

    def _collect(self, lay, dW, dB, want, grads):
        node = lay.node
        if node.op == "gemm":
            at = node.attrs
            if lay.perm is not None:
                dW = np.take(dW, lay.inv_perm, axis=1)   # 5x faster than fancy indexing
            if at["alpha"] != 1.0:
                dW = dW * F32(at["alpha"])
            if at["beta"] != 1.0:
                dB = dB * F32(at["beta"])
            if not at["transB"]:
                dW = dW.T
        for role, g in (("W", dW), ("B", dB)):
            name = node.params.get(role)
            if name in want:
                _accumulate(grads, name, np.asarray(g, F32).reshape(self.params[name].shape))

    def _bwd_op(self, node, g, ctx, want, grads):
        op, at, src = node.op, node.attrs, node.inputs[0]
        g = np.ascontiguousarray(g, F32)
        if op in ACTIVATION_OPS:
            c = ctx[node.name]
            if isinstance(c, tuple):
                z, a = c
                return [(src, g * dense_ops.act_derivative(op, z, a, at))]
            return [(src, c.grad_z(g))]
        if op == "add":
            return [(src, g), (node.inputs[1], g)]
        if op == "add_param":
            name = node.params["B"]
            if name in want:
                b = self.params[name]
                s = g.sum(axis=tuple(range(g.ndim - 1))) if g.ndim == 4 else g.sum(axis=0)
                _accumulate(grads, name, s.reshape(b.shape))
            return [(src, g)]
        if op == "maxpool":
            arg, shape = ctx[node.name]
            return [(src, nat.maxpool_backward(g, arg, list(shape)))]
        if op == "avgpool":
            return [(src, nat.avgpool_backward(g, list(ctx[node.name]), list(at["kernel"]), list(at["stride"]),
                                               list(at["pads"]), bool(at["ceil_mode"]),
                                               bool(at["count_include_pad"])))]
        if op == "globalavgpool":
            shape = ctx[node.name]
            return [(src, nat.global_avgpool_backward(g.reshape(shape[0], shape[3]), list(shape)))]
        if op in ("flatten", "reshape"):
            return [(src, g.reshape(ctx[node.name]))]
        if op == "batchnorm":
            p = lambda r: self.params[node.params[r]]  # noqa: E731
            dx, dscale, dbias = nat.batchnorm_backward(g, ctx[node.name], p("scale"), p("mean"), p("var"),
                                                       at["epsilon"])
            for role, gr in (("scale", dscale), ("B", dbias)):
                if node.params[role] in want:
                    _accumulate(grads, node.params[role], np.asarray(gr, F32))
            return [(src, dx)]
        raise ModelError(f"native engine: no backward for {node.onnx_op} ({node.name})")

    # -- measurement ---------------------------------------------------------------------------
    def _harvest_counters(self):
        """Move the kernels' counters of the step just run into last_step and the run totals."""
        phases = ("fp", "bp", "wg")
        self.last_step = {}
        for name, lay in self.layers.items():
            c = lay.k.counters(True)   # since the last reset (covers every call of the step)
            lay.k.reset_counters()
            self.last_step[name] = {ph: {k: int(v) for k, v in c[ph].items()} for ph in phases}
            for ph in phases:
                for kind, v in self.last_step[name][ph].items():
                    self._totals[kind][ph] += v

    def measure_step(self, x, y) -> dict:
        """One forward+backward on (x, y) with the kernels' own counters: MACs per phase
        (dense, required, executed), per layer, and the bytes FP kept for backward."""
        self.loss_and_grads(x, y)
        return self.step_counters()

    def step_counters(self) -> dict:
        """Counters of the most recent forward+backward (see measure_step); each layer also has the
        `act_bytes` its output activation kept for backward (as `activation_bytes`)."""
        totals = {k: {"fp": 0, "bp": 0, "wg": 0} for k in ("dense", "required", "executed")}
        for counts in self.last_step.values():
            for ph, kinds in counts.items():
                for kind in totals:
                    totals[kind][ph] += kinds[kind]
        for kind in totals:
            totals[kind]["total"] = sum(totals[kind].values())
        infos = [lay.k.output_info for lay in self.layers.values() if lay.k.output_info is not None]
        layers = []
        for name, counts in self.last_step.items():
            info = self.layers[name].k.output_info
            layers.append({"name": name, **counts, **({"act_bytes": _activation_bytes([info])} if info else {})})
        return {"macs_dense": totals["dense"], "macs_required": totals["required"],
                "macs_executed": totals["executed"], "layers": layers,
                "activation_bytes": _activation_bytes(infos)}

    def step_operands(self) -> dict:
        """{layer: (input SparseInfo, output SparseInfo)} the kernels kept in the most recent forward."""
        return {name: (lay.k.input_info, lay.k.output_info) for name, lay in self.layers.items()}

    def phase_medians(self, x, y, steps: int) -> dict:
        """Median FP/BP/WG milliseconds over `steps` training-step passes (after one warm-up)."""
        self._forward_backward(x, y)
        rec: List[dict] = [self._forward_backward(x, y)[3] for _ in range(steps)]
        return {k: float(np.median([r[k] for r in rec]) * 1e3) for k in ("fp", "bp", "wg")}

    def counters(self) -> dict:
        """MACs (dense, required, executed per phase) summed over every step run so far."""
        return {"macs": {k: dict(v) for k, v in self._totals.items()}, "threads": nat.num_threads(),
                "dense_kernels": self.dense}
