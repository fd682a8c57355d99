"""The code-interpreter cell, as it runs inside the sandbox: sent as an execution's code with entrypoint
`__e2b_cell__` and the user's code in the event. Standard library only, Python 3.9+ (any template's
interpreter); it never runs in the control plane.

Jupyter semantics where a fresh process per execution allows them:
- the last statement, when it is an expression, is evaluated and returned as the cell's result (its repr,
  and the `_repr_html_`/`_repr_markdown_`/... forms an object offers), unless it is None;
- an exception comes back as name, value and a traceback of the cell's own frames, not on stderr;
- state carries over between cells of one context: after each cell, module names, picklable values and the
  source of top-level `def`/`class` statements are saved under /tmp/.e2b-contexts; before the next cell of the
  context, they are restored (modules re-imported, definitions re-run, values unpickled). What does not
  pickle (open files, sockets, threads, generators, objects holding them) is not carried over.
"""

from __future__ import annotations

import ast
import base64
import importlib
import linecache
import os
import pickle
import sys
import traceback
import types

STATE_DIR = "/tmp/.e2b-contexts"
MAX_VALUE_BYTES = 32 * 1024 * 1024
CELL_FILE = "<cell>"
REPR_FORMATS = (
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
    ("_repr_javascript_", "javascript"),
)


def _state_path(context: str) -> str:
    safe = "".join(c for c in context if c.isalnum() or c in "-_") or "default"
    return os.path.join(STATE_DIR, safe + ".pickle")


def _load_state(context: str) -> dict:
    try:
        with open(_state_path(context), "rb") as f:
            state = pickle.load(f)
        if isinstance(state, dict):
            return state
    except Exception:
        pass
    return {"count": 0, "modules": {}, "definitions": {}, "values": {}}


def _restore(state: dict, namespace: dict) -> None:
    for name, module in state["modules"].items():
        try:
            namespace[name] = importlib.import_module(module)
        except Exception:
            pass
    for source in state["definitions"].values():
        try:
            exec(compile(source, CELL_FILE, "exec"), namespace)
        except Exception:
            pass
    for name, blob in state["values"].items():
        try:
            namespace[name] = pickle.loads(blob)
        except Exception:
            pass


def _save(context: str, state: dict, namespace: dict) -> None:
    modules, values = {}, {}
    for name, value in namespace.items():
        if name.startswith("__") or name in state["definitions"]:
            continue
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        if isinstance(value, (types.FunctionType, type)) and getattr(value, "__module__", "") == "__main__":
            continue
        try:
            blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            continue
        if len(blob) <= MAX_VALUE_BYTES:
            values[name] = blob
    state["modules"], state["values"] = modules, values
    try:
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        temporary = _state_path(context) + ".tmp"
        with open(temporary, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, _state_path(context))
    except Exception:
        pass


def _definitions(tree: ast.Module, source: str) -> dict:
    """Top-level def/class statements by name, with their decorators, as source."""
    lines = source.splitlines(True)
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            end = getattr(node, "end_lineno", None) or node.lineno
            found[node.name] = "".join(lines[start - 1 : end])
    return found


def _formats(value: object) -> dict:
    data = {"text": repr(value), "is_main_result": True}
    for method_name, key in REPR_FORMATS:
        method = getattr(value, method_name, None)
        if not callable(method) or isinstance(value, type):
            continue
        try:
            out = method()
        except Exception:
            continue
        if isinstance(out, tuple):
            out = out[0]
        if isinstance(out, bytes):
            out = base64.b64encode(out).decode()
        if out is not None:
            data[key] = out
    return data


def _error(exc: BaseException) -> dict:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CELL_FILE:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        lines = traceback.format_exception_only(type(exc), exc)
    else:
        lines = traceback.format_exception(type(exc), exc, tb)
    return {"name": type(exc).__name__, "value": str(exc), "traceback": "".join(lines)}


def __e2b_cell__(event: dict) -> dict:
    source = str(event.get("code", ""))
    context = str(event.get("context") or "default")
    os.environ.update({str(k): str(v) for k, v in (event.get("env") or {}).items()})
    module = types.ModuleType("__main__")
    namespace = module.__dict__
    namespace["__builtins__"] = __builtins__
    # Classes defined in cells live in this module, so their instances pickle and unpickle by reference.
    sys.modules["__main__"] = module
    state = _load_state(context)
    _restore(state, namespace)
    state["count"] = int(state.get("count", 0)) + 1
    linecache.cache[CELL_FILE] = (len(source), None, source.splitlines(True), CELL_FILE)
    outcome: dict = {"count": state["count"], "result": None, "error": None}
    try:
        tree = ast.parse(source, CELL_FILE, "exec")
    except SyntaxError as exc:
        outcome["error"] = _error(exc)
        return outcome
    last = None
    final = tree.body[-1] if tree.body else None
    if isinstance(final, ast.Expr):
        tree.body.pop()
        last = ast.Expression(final.value)
    state["definitions"] = {**state.get("definitions", {}), **_definitions(tree, source)}
    try:
        exec(compile(tree, CELL_FILE, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, CELL_FILE, "eval"), namespace)
            if value is not None:
                outcome["result"] = _formats(value)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: Jupyter reports them as errors
        outcome["error"] = _error(exc)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _save(context, state, namespace)
    return outcome
