"""native/_native.pyi against what edgetune._native really exposes, so the stub cannot drift.

The loaded module is introspected (not the C++ source): every public function, constant, class,
method and property must be in the stub and every stub entry in the module, with the same kind
(method or property), the same parameter names in the same order, and the same defaults.
"""
import ast
import inspect
import math
import os
import re

import pytest

import edgetune._native as nat

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "native", "_native.pyi")


def _stub():
    """{name: ("function", params) | ("constant", None) | ("class", {member: (kind, params)})}."""
    with open(STUB, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}

    def members(cls):
        out = {}
        for base in cls.bases:              # stub-only base classes share members between layers
            if isinstance(base, ast.Name) and base.id in classes:
                out.update(members(classes[base.id]))
        for n in cls.body:
            if isinstance(n, ast.FunctionDef):
                prop = any(isinstance(d, ast.Name) and d.id == "property" for d in n.decorator_list)
                out[n.name] = ("property", None) if prop else ("method", _params(n.args))
            elif isinstance(n, ast.AnnAssign):
                out[n.target.id] = ("property", None)
        return out

    out = {}
    for n in tree.body:
        if isinstance(n, ast.FunctionDef):
            out[n.name] = ("function", _params(n.args))
        elif isinstance(n, ast.AnnAssign) and n.target.id[0] != "_" and n.target.id not in ("F32", "Act"):
            out[n.target.id] = ("constant", None)
        elif isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
            out[n.name] = ("class", members(n))
    return out


def _params(args):
    """[(name, default or None)] of a stub signature, without self; positional-only ones are
    named POSITIONAL (pybind11 names an argument without py::arg argN, callable by position only)."""
    names = [POSITIONAL if a in args.posonlyargs and a.arg != "self" else a.arg for a in args.posonlyargs + args.args]
    defaults = [None] * (len(names) - len(args.defaults)) + [_literal(d) for d in args.defaults]
    return [(n, d) for n, d in zip(names, defaults) if n != "self"]


POSITIONAL = "<positional-only>"


def _literal(node):
    value = ast.literal_eval(node)
    return list(value) if isinstance(value, tuple) else value


def _runtime_params(fn):
    """[(name, default or None)] from a pybind11 docstring signature or a Python signature."""
    try:
        sig = inspect.signature(fn)
        return [(p.name, None if p.default is p.empty else p.default) for p in sig.parameters.values()
                if p.name != "self"]
    except (TypeError, ValueError):
        pass
    first = fn.__doc__.strip().splitlines()[0]
    inner = first[first.index("(") + 1:_closing(first, first.index("("))]
    out = []
    for part in _split_top(inner):
        name = part.split(":")[0].strip()
        name = POSITIONAL if re.fullmatch(r"arg\d+", name) else name
        default = part.split(" = ", 1)[1].strip() if " = " in part else None
        if name != "self":
            out.append((name, _default(default)))
    return out


def _closing(text, start):
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] in "([" and 1 or (-1 if text[i] in ")]" else 0)
        if depth == 0:
            return i
    raise ValueError(text)


def _split_top(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += 1 if ch in "([" else -1 if ch in ")]" else 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + ([cur] if cur.strip() else [])


def _default(text):
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def _same_default(stub, real):
    if stub is None or real is None:
        return stub is None and real is None
    if isinstance(stub, (int, float)) and isinstance(real, (int, float)) and not isinstance(stub, bool):
        return math.isclose(stub, real, rel_tol=1e-6)
    return stub == real


def _constructible(cls):
    """pybind11 gives a class without py::init an __init__ that only raises 'No constructor defined'."""
    doc = (vars(cls).get("__init__").__doc__ or "") if "__init__" in vars(cls) else ""
    return doc.strip().startswith("__init__(")


def _module_api():
    out = {}
    for name in dir(nat):
        value = getattr(nat, name)
        if name.startswith("_") or inspect.ismodule(value) or name == "annotations":
            continue
        if getattr(value, "__module__", "").startswith("edgetune.runtime"):
            continue                        # re-exported by the shim's imports (IsaError)
        if inspect.isclass(value):
            members = {}
            for m in dir(value):
                if m.startswith("_") and not (m == "__init__" and _constructible(value)):
                    continue
                raw = inspect.getattr_static(value, m)
                members[m] = ("property", None) if isinstance(raw, property) else \
                    ("method", _runtime_params(getattr(value, m)))
            out[name] = ("class", members)
        elif callable(value):
            out[name] = ("function", _runtime_params(value))
        else:
            out[name] = ("constant", None)
    return out


STUBBED, REAL = _stub(), _module_api()


def test_same_names():
    assert sorted(STUBBED) == sorted(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_same_kind_members_and_signatures(name):
    kind, detail = REAL[name]
    assert STUBBED[name][0] == kind
    if kind == "class":
        assert sorted(STUBBED[name][1]) == sorted(detail), name
        pairs = [(f"{name}.{m}", STUBBED[name][1][m], detail[m]) for m in detail]
    else:
        pairs = [(name, STUBBED[name], (kind, detail))]
    for what, (s_kind, s_params), (r_kind, r_params) in pairs:
        assert s_kind == r_kind, what
        if r_params is None:
            continue
        assert [p for p, _ in s_params] == [p for p, _ in r_params], what
        for (p, s_def), (_, r_def) in zip(s_params, r_params):
            assert _same_default(s_def, r_def), f"{what}({p}): stub default {s_def!r}, module {r_def!r}"


def test_the_parser_sees_a_real_signature():
    params = dict(_runtime_params(nat.activate))
    assert list(params) == ["z", "act", "alpha", "lo", "hi", "dense"] and params["hi"] == 6.0
    assert re.match(r"forward\(", nat.ConvLayer.forward.__doc__.strip())
