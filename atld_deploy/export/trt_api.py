"""The TensorRT Python API atld-deploy calls, read from its own source, and a check of it against a `tensorrt`.

`scan` reads Python source (no TensorRT needed) and records every attribute, enum member, method call and
property write on the `tensorrt` module or on a value derived from it: `trt.Builder(logger)` is a Builder,
`builder.create_network()` is what the real signature says it returns, `self._context` is what the class
assigned to it, a local function's parameters take the types of its call sites. The source is the one list
of used API, so a new call is checked without anyone updating a table.

`check` resolves the uses against an imported `tensorrt`: each name must exist, be a method where it is
called and a property where it is read or written, and each call must bind to a real signature (pybind11
docstrings: argument count, keyword names, TensorRT-typed arguments in their places). A use guarded by
`hasattr(X, "NAME")` in its function, or read with `getattr(X, NAME, default)`, is optional: it may be
absent in some versions, but not in all (`failures`).

`python atld_deploy/export/trt_api.py [--json] [FILES ...]` checks the installed TensorRT (standard library
only, so it runs as a plain script).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

MODULE: dict[str, Any] = {"k": "trt"}


def project_sources() -> list[Path]:
    """The atld-deploy files that call TensorRT."""
    return [Path(__file__).resolve().parent.parent / p for p in ("export/trt.py", "runtime/trt_runner.py")]


@dataclass(frozen=True)
class Use:
    """One use of the TensorRT API: `kind` is 'attr' (read), 'call' or 'store' (property write); `expr`
    is the symbolic value it acts on (JSON: {"k": "trt"} | {"k": "attr"|"call", "of": expr, "name": ...})."""

    file: str
    line: int
    text: str
    kind: str
    expr: dict[str, Any]
    optional: bool = False
    scope: str = ""  # the function it is in; a hasattr guard only covers uses in its own function


def _key(e: Any) -> str:
    return json.dumps(e, sort_keys=True)


class _Scanner:
    """Type-tracking walk over the sources; repeated so call-site and return types reach every function."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.trees = {name: ast.parse(text, name) for name, text in sources.items()}
        self.defs: dict[str, ast.FunctionDef | None] = {}  # None: the name is defined twice, so left untyped
        for tree in self.trees.values():
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    self.defs[node.name] = None if node.name in self.defs else node
        self.params: dict[str, dict[str, Any]] = {}
        self.returns: dict[str, Any] = {}
        self.attrs: dict[tuple[str, str], Any] = {}

    def run(self, passes: int = 3) -> list[Use]:
        for _ in range(passes):
            self.uses: list[Use] = []
            self.guards: set[tuple[str, str, str]] = set()
            for name, tree in self.trees.items():
                self.file, self.scope = name, ""
                self.consts = _literal_names(tree)
                self.module_env: dict[str, Any] = {}
                self._block(tree.body, self.module_env, None, None)
        seen: dict[tuple[str, str, str, bool], Use] = {}
        for u in self.uses:
            opt = u.kind != "store" and (u.scope, _key(u.expr["of"]), u.expr["name"]) in self.guards
            u = Use(**{**asdict(u), "optional": u.optional or opt})
            seen.setdefault((u.file, u.kind, _key(u.expr), u.optional), u)
        return list(seen.values())

    def _block(self, stmts: Iterable[ast.stmt], env: dict[str, Any], cls: str | None, fn: str | None) -> None:
        for s in stmts:
            self._stmt(s, env, cls, fn)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, cls: str | None) -> None:
        env = dict(self.module_env)
        a = node.args
        for p in (*a.posonlyargs, *a.args, *a.kwonlyargs):
            bound = self.params.get(node.name, {}).get(p.arg) if cls is None else None
            if p.arg == "trt":
                env["trt"] = MODULE
            elif bound is not None:
                env[p.arg] = bound
        outer, self.scope = self.scope, f"{cls}.{node.name}" if cls else node.name
        self._block(node.body, env, cls, node.name if cls is None else None)
        self.scope = outer

    def _stmt(self, s: ast.stmt, env: dict[str, Any], cls: str | None, fn: str | None) -> None:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._function(s, cls)
        elif isinstance(s, ast.ClassDef):
            for item in s.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self._function(item, s.name)
        elif isinstance(s, ast.Import):
            for alias in s.names:
                if alias.name == "tensorrt":
                    env[alias.asname or "tensorrt"] = MODULE
        elif isinstance(s, ast.ImportFrom) and s.module == "tensorrt" and s.level == 0:
            for alias in s.names:
                env[alias.asname or alias.name] = self._emit(s, "attr", {"k": "attr", "of": MODULE, "name": alias.name})
        elif isinstance(s, (ast.Assign, ast.AnnAssign)):
            value = self._expr(s.value, env, cls) if s.value is not None else None
            for target in s.targets if isinstance(s, ast.Assign) else [s.target]:
                self._bind(target, value, env, cls)
        elif isinstance(s, ast.AugAssign):
            self._expr(s.value, env, cls)
            self._bind(s.target, None, env, cls)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            self._expr(s.iter, env, cls)
            names = self._iter_names(s.iter)
            first = s.target.elts[0] if isinstance(s.target, ast.Tuple) and s.target.elts else s.target
            if names is not None and isinstance(first, ast.Name):
                env[("names", first.id)] = names  # getattr(X, loop_var) reads each of these names
            self._bind(s.target, None, env, cls)
            self._block(s.body, env, cls, fn)
            self._block(s.orelse, env, cls, fn)
        elif isinstance(s, ast.Return):
            value = self._expr(s.value, env, cls)
            if value is not None and fn is not None:
                self.returns.setdefault(fn, value)
        else:
            self._generic(s, env, cls, fn)

    def _generic(self, node: ast.AST, env: dict[str, Any], cls: str | None, fn: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                self._stmt(child, env, cls, fn)
            elif isinstance(child, ast.expr):
                self._expr(child, env, cls)
            else:
                self._generic(child, env, cls, fn)

    def _bind(self, target: ast.expr, value: Any, env: dict[str, Any], cls: str | None) -> None:
        if isinstance(target, ast.Name):
            if value is not None:
                env[target.id] = value  # a later untyped assignment keeps the known type
        elif isinstance(target, ast.Attribute):
            if isinstance(target.value, ast.Name) and target.value.id == "self" and cls is not None:
                if value is not None:
                    self.attrs[(cls, target.attr)] = value
                return
            base = self._expr(target.value, env, cls)
            if base is not None:
                self._emit(target, "store", {"k": "attr", "of": base, "name": target.attr})
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self._bind(t, None, env, cls)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, None, env, cls)
        else:
            self._expr(target, env, cls)

    def _iter_names(self, it: ast.expr) -> list[str] | None:
        """Names a loop variable takes when it walks a module-level literal (or its .keys()/.items())."""
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in ("keys", "items"):
            it = it.func.value
        return self.consts.get(it.id) if isinstance(it, ast.Name) else None

    def _emit(self, node: ast.AST, kind: str, expr: dict[str, Any], optional: bool = False, note: str = "") -> dict[str, Any]:
        text = ast.unparse(node)
        text = (text if len(text) <= 100 else text[:97] + "...") + note
        self.uses.append(Use(self.file, getattr(node, "lineno", 0), text, kind, expr, optional, self.scope))
        return expr

    def _expr(self, node: ast.expr | None, env: dict[str, Any], cls: str | None) -> Any:
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and cls is not None:
                return self.attrs.get((cls, node.attr))
            base = self._expr(node.value, env, cls)
            return None if base is None else self._emit(node, "attr", {"k": "attr", "of": base, "name": node.attr})
        if isinstance(node, ast.Call):
            return self._call(node, env, cls)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, env, cls)
            else:  # comprehension, keyword, ...: their expressions may use TensorRT too
                for sub in ast.iter_child_nodes(child):
                    if isinstance(sub, ast.expr):
                        self._expr(sub, env, cls)
        return None

    def _call(self, node: ast.Call, env: dict[str, Any], cls: str | None) -> Any:
        func = node.func
        base = self._expr(func.value, env, cls) if isinstance(func, ast.Attribute) else None
        if not isinstance(func, (ast.Attribute, ast.Name)):
            self._expr(func, env, cls)
        args = [self._expr(a.value if isinstance(a, ast.Starred) else a, env, cls) for a in node.args]
        kwargs = [[k.arg, self._expr(k.value, env, cls)] for k in node.keywords]
        star = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        if isinstance(func, ast.Attribute):
            if base is None:
                return None
            expr = {"k": "call", "of": base, "name": func.attr, "args": args, "kwargs": kwargs, "star": star}
            return self._emit(node, "call", expr)
        if not isinstance(func, ast.Name):
            return None
        if func.id in ("getattr", "hasattr") and len(args) >= 2 and args[0] is not None:
            lit = node.args[1]
            names = [lit.value] if isinstance(lit, ast.Constant) and isinstance(lit.value, str) else None
            if names is None and isinstance(lit, ast.Name):
                names = env.get(("names", lit.id))
            if func.id == "hasattr":
                self.guards.update((self.scope, _key(args[0]), n) for n in names or [])
                return None
            if names is None:  # a name the scan cannot know: reported, never silently skipped
                return self._emit(node, "attr", {"k": "attr", "of": args[0], "name": "<dynamic>"})
            note = "" if isinstance(lit, ast.Constant) else " [{}]"
            optional = len(args) >= 3
            out = [self._emit(node, "attr", {"k": "attr", "of": args[0], "name": n}, optional, note.format(n)) for n in names]
            return out[0] if len(out) == 1 else None
        target = self.defs.get(func.id)
        if target is not None:
            params = [p.arg for p in (*target.args.posonlyargs, *target.args.args)]
            bind = self.params.setdefault(func.id, {})
            for p, v in [*zip(params, args), *((k, v) for k, v in kwargs if k is not None)]:
                if v is not None:
                    bind.setdefault(p, v)
            return self.returns.get(func.id)
        return None


def _literal_names(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level names bound to literal dicts/lists/tuples of strings (their keys or items)."""
    out: dict[str, list[str]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not isinstance(target, ast.Name):
            continue
        items = value.keys if isinstance(value, ast.Dict) else getattr(value, "elts", None)
        if items and all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
            out[target.id] = [i.value for i in items]  # type: ignore[union-attr]
    return out


def scan_files(paths: Sequence[str | Path]) -> list[Use]:
    """Every TensorRT use in the files (scanned together, labelled by file name), one per distinct use."""
    return _Scanner({Path(p).name: Path(p).read_text() for p in paths}).run()


# checking against an imported tensorrt
_ABSENT = object()  # the receiver's own use failed or is an optional name this version lacks
_TRT_TYPE = re.compile(r"\btensorrt(?:_bindings)?\.tensorrt\.([A-Za-z_][\w.]*)")


@dataclass(frozen=True)
class _Param:
    name: str
    default: bool
    kind: str  # 'pos' (positional only), 'any', 'kw' (keyword only), 'args', 'kwargs'
    annotation: str


def _split_top(text: str) -> list[str]:
    """Split a pybind11 parameter list at the commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            depth += 1
        elif ch in ")]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts, cur = [*parts, "".join(cur).strip()], []
            continue
        cur.append(ch)
    return [*parts, "".join(cur).strip()] if "".join(cur).strip() else parts


def _parse_params(text: str) -> list[_Param]:
    out: list[_Param] = []
    kind = "any"
    for part in _split_top(text):
        if part == "/":
            out = [_Param(p.name, p.default, "pos", p.annotation) for p in out]
            continue
        if part == "*":
            kind = "kw"
            continue
        star = "kwargs" if part.startswith("**") else "args" if part.startswith("*") else ""
        name, _, rest = part.lstrip("*").partition(":")
        annotation, eq, _ = rest.partition("=")
        name = name.split("=")[0].strip()
        k = star or ("pos" if re.fullmatch(r"arg\d+", name) else kind)
        out.append(_Param(name, bool(eq) or "=" in part.split(":")[0], k, annotation.strip()))
    if out and out[0].name == "self":
        out = out[1:]
    return out


def _signatures(obj: Any, name: str) -> list[tuple[list[_Param], str]]:
    """(parameters without self, return annotation) of each overload, from the pybind11 docstring, else
    from `inspect.signature` (TensorRT's pure-Python helpers)."""
    out = []
    for line in (getattr(obj, "__doc__", None) or "").splitlines():
        m = re.match(rf"\s*(?:\d+\.\s+)?{re.escape(name)}\((.*)\)\s*->\s*(.+?)\s*$", line)
        if m and m.group(1) != "*args, **kwargs":
            out.append((_parse_params(m.group(1)), m.group(2)))
    if out:
        return out
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    kinds = {"POSITIONAL_ONLY": "pos", "POSITIONAL_OR_KEYWORD": "any", "KEYWORD_ONLY": "kw",
             "VAR_POSITIONAL": "args", "VAR_KEYWORD": "kwargs"}
    params = [_Param(p.name, p.default is not p.empty, kinds[p.kind.name], "") for p in sig.parameters.values()]
    return [(params[1:] if params and params[0].name == "self" else params, "")]


class _Checker:
    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.memo: dict[str, Any] = {}

    def resolve_type(self, annotation: str) -> type | None:
        m = _TRT_TYPE.search(annotation or "")
        obj: Any = self.trt
        for part in m.group(1).split(".") if m else ["<none>"]:
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, type) else None

    def value(self, e: dict[str, Any]) -> Any:
        """('obj', object) | ('inst', class) | None (not a TensorRT type) | _ABSENT."""
        k = _key(e)
        self.memo[k] = self.memo[k] if k in self.memo else self._value(e)
        return self.memo[k]

    def _value(self, e: dict[str, Any]) -> Any:
        if e["k"] == "trt":
            return ("obj", self.trt)
        recv = self.value(e["of"])
        if recv is None or recv is _ABSENT:
            return recv
        problem, result = self.apply(recv, e)
        return _ABSENT if problem else result

    def apply(self, recv: tuple[str, Any], e: dict[str, Any], kind: str | None = None) -> tuple[str, Any]:
        """(problem or '', resulting value) of reading/calling/writing `e['name']` on `recv`."""
        how, obj = recv
        name = e["name"]
        owner = obj.__name__ if hasattr(obj, "__name__") else type(obj).__name__
        if name == "<dynamic>":
            return f"getattr on {owner} with a name the checker cannot resolve; use a literal or a module-level table", None
        if not hasattr(obj, name):
            return f"{owner} has no attribute {name!r}", None
        attr = inspect.getattr_static(obj, name) if how == "inst" else getattr(obj, name)
        if isinstance(attr, staticmethod):
            attr = getattr(obj, name)
        kind = kind or ("call" if e["k"] == "call" else "attr")
        is_prop = isinstance(attr, property)
        if kind == "store":
            ok = how == "inst" and is_prop and attr.fset is not None
            return ("" if ok else f"{owner}.{name} is not a writable property"), None
        if kind == "attr":
            if how == "inst" and is_prop:
                sigs = _signatures(attr.fget, "")
                ret = self.resolve_type(sigs[0][1]) if sigs else None
                return "", ("inst", ret) if ret else None
            if how == "inst" and callable(attr) and not isinstance(attr, type):
                return f"{owner}.{name} is a method, but the code reads it as a value (call it?)", None
            return "", ("obj", attr)
        if is_prop:
            return f"{owner}.{name} is a property, but the code calls it", None
        target = attr.__init__ if isinstance(attr, type) else attr
        sigs = _signatures(target, "__init__" if isinstance(attr, type) else name)
        if not sigs:
            return f"cannot read the signature of {owner}.{name}", None
        reasons = []
        for params, ret in sigs:
            why = self.bind(params, e)
            if not why:
                if isinstance(attr, type):
                    return "", ("inst", attr)
                t = self.resolve_type(ret)
                return "", ("inst", t) if t else None
            reasons.append(f"{why} [{name}({', '.join(p.name for p in params)})]")
        return f"{owner}.{name}: " + "; ".join(reasons), None

    def bind(self, params: list[_Param], e: dict[str, Any]) -> str:
        """'' when the call's arguments bind to `params`, else why not."""
        args, kwargs = e.get("args", []), e.get("kwargs", [])
        positional = [p for p in params if p.kind in ("pos", "any")]
        has = {p.kind for p in params}
        if len(args) > len(positional) and "args" not in has and not e.get("star"):
            return f"takes at most {len(positional)} positional argument(s), the code passes {len(args)}"
        bound = {p.name: (p, v) for p, v in zip(positional, args)}
        for kw, v in kwargs:
            if kw is None:
                continue
            p = next((p for p in params if p.name == kw and p.kind in ("any", "kw")), None)
            if p is None and "kwargs" not in has:
                return f"no parameter named {kw!r}"
            if kw in bound:
                return f"{kw!r} is given twice"
            bound[kw] = (p or _Param(kw, True, "kwargs", ""), v)
        missing = [p.name for p in params if p.kind in ("pos", "any", "kw") and not p.default and p.name not in bound]
        if missing and not e.get("star"):
            return f"missing required argument(s) {', '.join(missing)}"
        for pname, (p, v) in bound.items():
            want = self.resolve_type(p.annotation)
            got = self.value(v) if v is not None else None
            if want is None or got is None or got is _ABSENT:
                continue
            ok = issubclass(got[1], want) if got[0] == "inst" else isinstance(got[1], want)
            if not ok:
                have = got[1].__name__ if got[0] == "inst" else repr(got[1])
                return f"argument {pname!r} must be a {want.__name__}, the code passes {have}"
        return ""

    def check(self, use: Use) -> dict[str, Any]:
        recv = self.value(use.expr["of"])
        status, detail = "ok", ""
        if recv is _ABSENT:
            status, detail = "skipped", "its receiver is absent or wrong here (reported on its own line)"
        elif recv is None:
            status, detail = "error", "the checker cannot tell which TensorRT type this acts on"
        else:
            problem, _ = self.apply(recv, use.expr, use.kind)
            if problem:
                missing = problem.endswith(f"no attribute {use.expr['name']!r}")
                status, detail = ("absent" if use.optional and missing else "error"), problem
        return dict(asdict(use), status=status, detail=detail)


def check(trt: Any, uses: Sequence[Use]) -> list[dict[str, Any]]:
    """Each use resolved against the imported module `trt`: its fields plus 'status' ('ok', 'absent' for an
    optional name this version lacks, 'skipped' when its receiver already failed, 'error') and 'detail'."""
    return [c.check(u) for c in [_Checker(trt)] for u in uses]


def failures(reports: Mapping[str, Sequence[Mapping[str, Any]]], *, absent_everywhere: bool = True) -> list[str]:
    """Problems across versions (version -> `check` results): every error, and (unless told not to, as for
    one installed version) every optional name that no checked version has: a misspelt guarded name."""
    out = [f"TensorRT {v}: {r['file']}:{r['line']} {r['text']}: {r['detail']}"
           for v, results in reports.items() for r in results if r["status"] == "error"]
    if not absent_everywhere:
        return out
    absent: dict[tuple[str, int, str], list[str]] = {}
    for v, results in reports.items():
        for r in results:
            if r["optional"]:
                absent.setdefault((r["file"], r["line"], r["text"]), []).append(r["status"])
    out += [f"{f}:{line} {text}: absent in every checked version ({', '.join(reports)})"
            for (f, line, text), states in absent.items() if all(s == "absent" for s in states)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Check the importable `tensorrt` against source files: each argument is one set of files scanned
    together, joined by the path separator (default: atld-deploy's TensorRT code as one set)."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    sets = [a for a in args if a != "--json"] or [os.pathsep.join(str(p) for p in project_sources())]
    try:
        import tensorrt
    except Exception as e:  # noqa: BLE001 - any import failure is the answer
        msg = f"cannot import tensorrt: {type(e).__name__}: {e}"
        print(json.dumps({"import_error": msg}) if as_json else msg)
        return 1
    version = str(getattr(tensorrt, "__version__", "?"))
    results = {s: check(tensorrt, scan_files(s.split(os.pathsep))) for s in sets}
    if as_json:
        print(json.dumps({"version": version, "results": results}))
        return 0
    bad = [line for rs in results.values() for line in failures({version: rs}, absent_everywhere=False)]
    absent = sorted({r["text"] for rs in results.values() for r in rs if r["status"] == "absent"})
    print(f"TensorRT {version}: {sum(map(len, results.values()))} uses checked, {len(bad)} problem(s); "
          f"optional names absent in this version: {', '.join(absent) or 'none'}")
    print("".join(f"  {line}\n" for line in bad), end="")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
