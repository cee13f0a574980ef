"""The backend's Python, read as text: modules parsed with `ast` (never imported or run), the LLM call
sites and where each constructed model goes, the settings (pydantic v1/v2 classes, dataclasses, os.getenv
constants) and the env names they read, an existing provider switch.

Shared by `init` (discovery) and phase2 (wiring the switch in the project's own style), which is why it
lives below both.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

SKIP_DIRS = {".git", ".hg", ".venv", "venv", "node_modules", "__pycache__", "site-packages",
             ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist", ".graphrag-migrate",
             "tests", "test", "migrations"}
LLM_CLASSES = {"ChatOllama", "OllamaLLM", "ChatOpenAI"}
OLLAMA_CLASSES = {"ChatOllama", "OllamaLLM"}
STREAM_METHODS = {"stream", "astream", "astream_events", "astream_log"}
WRAP_METHODS = {"bind", "bind_tools", "with_config", "with_retry", "with_fallbacks", "with_structured_output",
                "configurable_fields", "configurable_alternatives", "pipe", "with_listeners"}
PROVIDERS = {"ollama", "openai", "vllm", "azure", "anthropic", "groq", "together", "lmstudio", "huggingface",
             "bedrock", "gemini", "google", "mistral", "local", "llamacpp", "tgi", "openrouter"}


def ev(rel: str, line: int | None = None) -> str:
    """Evidence: `file:line` (or the file alone)."""
    return f"{rel}:{line}" if line else rel


def relpath(path: Path | str, root: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return "." if rel == "." else rel


def inside(path: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        return True
    except ValueError:
        return False


# ---- Python: parsed, never imported -------------------------------------------------------------------
def parse_python(path: Path) -> tuple[ast.Module | None, list[tuple[int, str]]]:
    """The module's AST and the lines blanked to get it: a line this Python cannot parse (newer syntax,
    e.g. a PEP 701 f-string on 3.11) is replaced by `pass` at its indentation, up to 20 of them."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, []
    lines = text.splitlines()
    blanked: list[tuple[int, str]] = []
    for _ in range(20):
        try:
            return ast.parse("\n".join(lines), filename=str(path)), blanked
        except SyntaxError as exc:
            n = exc.lineno
            if not n or n > len(lines) or any(b == n for b, _ in blanked):
                return None, blanked
            blanked.append((n, exc.msg))
            indent = re.match(r"\s*", lines[n - 1]).group(0)
            lines[n - 1] = indent + "pass"
    return None, blanked


# ---- the project's own grammar: newer syntax judged by the Python the project targets ------------------
# Run as `python -I -c` by the project's Python: it parses each file it is given on stdin (never runs it)
# and says which do not parse, where. Written for any Python 3 the project may target.
_PARSE_SCRIPT = r"""
import ast, json, sys
files = json.loads(sys.stdin.read())
verdicts = {}
for name, text in files.items():
    try:
        compile(text, name, "exec", ast.PyCF_ONLY_AST, True)
        verdicts[name] = None
    except SyntaxError as exc:
        verdicts[name] = [exc.lineno or 1, exc.msg]
print(json.dumps({"version": "%d.%d" % sys.version_info[:2], "files": verdicts}))
"""
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Grammar:
    """Whose syntax the backend is judged by when this Python cannot parse a file: `version` the one the
    project targets ("3.12"; empty = unknown), `python` an interpreter to parse with (backend.python)."""

    version: str = ""
    python: str = ""


def version_tuple(version: str) -> tuple[int, ...] | None:
    m = re.match(r"\s*(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_with(python: str, texts: dict[str, str], timeout: float = 60.0) -> tuple[str, dict]:
    """(that Python's version, {name: None when it parses, else [line, message]}). Nothing is imported or
    run: the texts go to `python -I` on stdin. Raises OSError when it cannot be run or answers nonsense."""
    try:
        proc = subprocess.run([python, "-I", "-c", _PARSE_SCRIPT], input=json.dumps(texts), capture_output=True,
                              text=True, timeout=timeout)
    except FileNotFoundError:
        raise OSError(f"{python} not found") from None
    except subprocess.TimeoutExpired:
        raise OSError(f"{python} did not answer in {timeout:.0f} s") from None
    except OSError as exc:
        raise OSError(f"{python} could not be run: {exc.strerror or exc}") from None
    try:
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        return str(answer["version"]), dict(answer["files"])
    except (ValueError, IndexError, KeyError, TypeError):
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise OSError(f"{python} could not be run: {last[:200]}") from None


def interpreter_for(version: str) -> str | None:
    """`pythonX.Y` on PATH when it runs and is that version (a pyenv shim for a version not selected
    does not), else None."""
    found = shutil.which(f"python{version}")
    if found is None:
        return None
    try:
        answered, _ = parse_with(found, {}, timeout=20)
    except OSError:
        return None
    return found if version_tuple(answered) == version_tuple(version) else None


class Scope:
    """A module, class or function body: the names it binds, its nested functions."""

    def __init__(self, module: "PyModule", node: ast.AST, parent: "Scope | None", qual: str, kind: str):
        self.module, self.node, self.parent, self.qual, self.kind = module, node, parent, qual, kind
        self.locals: set[str] = set()
        self.funcs: dict[str, Scope] = {}
        self.classes: dict[str, Scope] = {}
        self.globals: set[str] = set()
        self.stored: set[str] = set()  # names assigned (or parameters)
        self.imported: set[str] = set()  # names bound by an import inside a function
        self.cls: Scope | None = None  # for a method: its class
        self.self_name: str | None = None
        self._nodes: list[ast.AST] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.module.name, self.qual)

    def own_nodes(self) -> list[ast.AST]:
        """Every node of this body, not descending into nested functions, classes and lambdas."""
        if self._nodes is None:
            self._nodes = list(self._walk())
        return self._nodes

    def _walk(self) -> Iterator[ast.AST]:
        body = self.node.body if hasattr(self.node, "body") else []
        stack = list(reversed(body))
        while stack:
            node = stack.pop()
            yield node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                if not isinstance(node, ast.Lambda):
                    stack.extend(reversed(node.decorator_list))
                    if not isinstance(node, ast.ClassDef):
                        stack.extend(reversed([d for d in node.args.defaults + node.args.kw_defaults if d]))
                continue
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


@dataclass
class PyModule:
    name: str
    path: Path
    rel: str
    tree: ast.Module
    blanked: list[tuple[int, str]]
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # local -> (module, attr)
    import_lines: dict[str, int] = field(default_factory=dict)
    scope: Scope | None = None
    scopes: list[Scope] = field(default_factory=list)
    text: str = ""
    judged_by: str = ""  # the project's Python that confirmed the lines this one could not parse

    def line(self, n: int) -> str:
        lines = self.text.splitlines()
        return lines[n - 1] if 0 < n <= len(lines) else ""


class PyIndex:
    """Every module under one source directory, by dotted name relative to its import root."""

    def __init__(self, root: Path, source: Path, import_root: Path):
        self.root, self.source, self.import_root = root, source, import_root
        self.modules: dict[str, PyModule] = {}
        self.unparsed: list[str] = []
        self.blanked: list[str] = []
        self.rejected: dict[str, tuple[int, str]] = {}  # rel -> this Python's first syntax error
        self._texts: dict[str, str] = {}
        for path in sorted(python_files(source)):
            base = import_root if inside(path, import_root) else source
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts) or path.stem
            tree, blanked = parse_python(path)
            rel = relpath(path, root)
            if blanked or tree is None:
                self._reject(rel, path, blanked)
            if tree is None:
                self.unparsed.append(rel)
                continue
            for n, msg in blanked:
                self.blanked.append(f"{ev(rel, n)} ({msg})")
            module = PyModule(name, path, rel, tree, blanked, text=path.read_text(encoding="utf-8"))
            module.is_package = path.name == "__init__.py"
            self.modules[name] = module
        for module in self.modules.values():
            self._imports(module)
            self._scopes(module)

    def _reject(self, rel: str, path: Path, blanked: list[tuple[int, str]]) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.rejected[rel] = (1, f"not readable: {exc}")
            return
        self._texts[rel] = text
        if blanked:
            self.rejected[rel] = blanked[0]
            return
        try:
            ast.parse(text, filename=rel)
            self.rejected[rel] = (1, "too many lines this Python cannot parse")
        except SyntaxError as exc:
            self.rejected[rel] = (exc.lineno or 1, exc.msg)

    def judge(self, grammar: Grammar) -> list[str]:
        """Every file this Python could not parse, judged by the project's own grammar: one line per file
        that is not valid Python for the project (file:line and the Python that said so; its module is
        dropped), or that cannot be judged here (naming the Python that is needed). A file the target
        Python parses is valid: it stays, read with the lines this Python cannot parse blanked."""
        if not self.rejected:
            return []
        target, here = version_tuple(grammar.version), version_tuple(HERE)
        if target is not None and target <= here:  # this Python is the project's grammar, or newer
            return [self._drop(rel, f"{ev(rel, n)} does not parse under Python {HERE} (this tool's; the project "
                                    f"targets {grammar.version}): {msg}") for rel, (n, msg) in self.rejected.items()]
        version, verdicts, why = "", {}, ""
        if grammar.python:
            try:
                version, verdicts = parse_with(grammar.python, self._texts)
            except OSError as exc:
                why = str(exc)
            else:
                judged = version_tuple(version)
                if judged is None or judged < (target or here) or (target is None and judged == here):
                    why, verdicts = f"{grammar.python} is Python {version}", {}
        problems = []
        for rel, (n, msg) in self.rejected.items():
            if rel in verdicts and verdicts[rel] is None:
                module = next((m for m in self.modules.values() if m.rel == rel), None)
                if module is None:
                    problems.append(f"{rel} parses under Python {version} but this tool (Python {HERE}) cannot read "
                                    "it: run graphrag-migrate under that Python")
                else:
                    module.judged_by = grammar.python
                continue
            if rel in verdicts:
                m, message = verdicts[rel]
                problems.append(self._drop(rel, f"{ev(rel, m)} does not parse under Python {version} "
                                                f"({grammar.python}): {message}"))
                continue
            needed = (f"the project targets {grammar.version} — set backend.python to a python{grammar.version} "
                      "executable" if target else
                      f"{msg} — if the project targets a newer Python, set backend.python_version and backend.python")
            problems.append(f"{ev(rel, n)} does not parse under Python {HERE} (this tool's); {needed}"
                            + (f" ({why})" if why else ""))
        return problems

    def _drop(self, rel: str, problem: str) -> str:
        for name in [n for n, m in self.modules.items() if m.rel == rel]:
            del self.modules[name]
        if rel not in self.unparsed:
            self.unparsed.append(rel)
        return problem

    def find(self, name: str) -> PyModule | None:
        if name in self.modules:
            return self.modules[name]
        tails = [m for n, m in self.modules.items() if n.endswith("." + name) or name.endswith("." + n)]
        return tails[0] if len(tails) == 1 else None

    def _imports(self, module: PyModule) -> None:
        package = module.name if getattr(module, "is_package", False) else module.name.rpartition(".")[0]
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    module.imports[local] = (alias.name if alias.asname else alias.name.split(".")[0], None)
                    module.import_lines.setdefault(local, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    local = alias.asname or alias.name
                    module.imports[local] = (target, alias.name)
                    module.import_lines.setdefault(local, node.lineno)

    def _scopes(self, module: PyModule) -> None:
        top = Scope(module, module.tree, None, "", "module")
        module.scope = top
        module.scopes = [top]
        self._fill(top)

    def _fill(self, scope: Scope) -> None:
        for node in scope.own_nodes():
            if node is scope.node:
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                child = Scope(scope.module, node, scope, f"{scope.qual}.{node.name}".lstrip("."), "function")
                if scope.kind == "class":
                    child.cls = scope
                    args = node.args.posonlyargs + node.args.args
                    child.self_name = args[0].arg if args else None
                else:
                    scope.funcs[node.name] = child
                scope.locals.add(node.name)
                for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                    child.locals.add(a.arg)
                    child.stored.add(a.arg)
                for a in (node.args.vararg, node.args.kwarg):
                    if a is not None:
                        child.locals.add(a.arg)
                        child.stored.add(a.arg)
                scope.module.scopes.append(child)
                self._fill(child)
            elif isinstance(node, ast.ClassDef):
                child = Scope(scope.module, node, scope, f"{scope.qual}.{node.name}".lstrip("."), "class")
                scope.classes[node.name] = child
                scope.locals.add(node.name)
                scope.module.scopes.append(child)
                self._fill(child)
            elif isinstance(node, ast.Global):
                scope.globals.update(node.names)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                scope.locals.add(node.id)
                scope.stored.add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and scope.kind != "module":
                for alias in node.names:
                    scope.locals.add(alias.asname or alias.name.split(".")[0])
                    scope.imported.add(alias.asname or alias.name.split(".")[0])

    # ---- name resolution ----
    def lookup(self, name: str, scope: Scope) -> tuple | None:
        """What a name refers to from `scope`: ("var", scope key, name), ("func", key), ("class", key),
        ("module", name) or ("external", module, attr)."""
        s = scope
        first = True
        while s is not None:
            if s.kind == "class" and not first:
                s = s.parent
                continue
            if name in s.funcs:
                return ("func", s.funcs[name].key)
            if name in s.classes:
                return ("class", s.classes[name].key)
            if name in s.locals and name not in s.globals:
                if name in s.imported and name not in s.stored:
                    break
                return ("var", s.key, name)
            first = False
            s = s.parent
        return self.resolve_import(scope.module, name)

    def resolve_import(self, module: PyModule, name: str) -> tuple | None:
        if name not in module.imports:
            return _defined_in(module.scope, name)
        target, attr = module.imports[name]
        return self.member(target, attr)

    def member(self, target: str, attr: str | None) -> tuple | None:
        if attr is None:
            found = self.find(target)
            return ("module", found.name) if found else ("external", target, None)
        found = self.find(target)
        if found is not None:
            top = found.scope
            if attr in top.locals and attr not in top.funcs and attr not in top.classes and attr in found.imports:
                return self.member(*found.imports[attr])  # re-exported
            defined = _defined_in(top, attr)
            if defined is not None:
                return defined
        sub = self.find(f"{target}.{attr}" if target else attr)
        if sub is not None:
            return ("module", sub.name)
        return ("external", target, attr)

    def ref(self, expr: ast.AST, scope: Scope) -> tuple | None:
        """What a Name or dotted Attribute refers to."""
        if isinstance(expr, ast.Name):
            return self.lookup(expr.id, scope)
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and scope.self_name and expr.value.id == scope.self_name and scope.cls:
                return ("attr", scope.cls.key, expr.attr)
            base = self.ref(expr.value, scope)
            if base and base[0] == "module":
                return self.member(base[1], expr.attr)
            if base and base[0] == "external":
                return ("external", ".".join(p for p in (base[1], base[2]) if p), expr.attr)
        return None

    def scope_of(self, key: tuple[str, str]) -> Scope | None:
        module = self.modules.get(key[0])
        if module is None:
            return None
        return next((s for s in module.scopes if s.qual == key[1]), None)

    def class_name_of(self, func: ast.AST, scope: Scope) -> str | None:
        """The class a call constructs, by its imported or local name (ChatOllama, StreamingResponse …)."""
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
        return None

    def origin_module(self, func: ast.AST, scope: Scope) -> str | None:
        """The module a called name was imported from (for `ChatOllama` → langchain_ollama)."""
        r = self.ref(func, scope)
        if r and r[0] == "external":
            return r[1]
        return None


def python_files(source: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for f in filenames:
            if f.endswith(".py") and not (f.startswith("test_") or f.endswith("_test.py") or f == "conftest.py"):
                yield Path(dirpath) / f


# ---- LLM call sites, and whether each is streamed ------------------------------------------------------
@dataclass
class CallSite:
    file: str
    line: int
    cls: str
    streaming: bool
    module: str = ""
    kwargs: dict[str, str | None] = field(default_factory=dict)  # base_url / model -> the setting name
    why_streaming: str = ""

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "class": self.cls, "streaming": self.streaming}


def _llm_class(index: PyIndex, call: ast.Call, scope: Scope) -> str | None:
    name = index.class_name_of(call.func, scope)
    origin = index.origin_module(call.func, scope) or ""
    if name in LLM_CLASSES:
        return name
    if name == "Ollama" and origin.startswith(("langchain_community", "langchain.")):
        return "Ollama"
    if name in ("Client", "AsyncClient") and origin.split(".")[0] == "ollama":
        return f"ollama.{name}"
    return None


def call_sites(index: PyIndex) -> list[tuple[CallSite, ast.Call, Scope]]:
    found = []
    for module in index.modules.values():
        for scope in module.scopes:
            for node in scope.own_nodes():
                if isinstance(node, ast.Call):
                    cls = _llm_class(index, node, scope)
                    if cls:
                        found.append((CallSite(module.rel, node.lineno, cls, False, module.name), node, scope))
    return sorted(found, key=lambda f: (f[0].file, f[0].line))


class Flow:
    """Where one constructed object goes: the variables, attributes and functions that hold or return it
    (through `|` chains, wrappers such as `.bind(...)`, `Depends(factory)` and call arguments)."""

    def __init__(self, index: PyIndex, site: ast.Call):
        self.index, self.site = index, site
        self.carriers: set[tuple] = set()
        self.stream_at: str = ""
        self._run()

    def carries(self, expr: ast.AST | None, scope: Scope, depth: int = 0) -> bool:
        if expr is None or depth > 12:
            return False
        if expr is self.site:
            return True
        if isinstance(expr, (ast.Name, ast.Attribute)):
            r = self.index.ref(expr, scope)
            if r is not None and r[0] == "var":
                return ("var", r[1], r[2]) in self.carriers
            if r is not None and r[0] == "attr":
                return r in self.carriers
            return False
        if isinstance(expr, ast.Call):
            r = self.index.ref(expr.func, scope)
            if r is not None and r[0] == "func" and ("func", r[1]) in self.carriers:
                return True
            if isinstance(expr.func, ast.Attribute) and expr.func.attr in WRAP_METHODS:
                return self.carries(expr.func.value, scope, depth + 1)
            name = self.index.class_name_of(expr.func, scope)
            if name == "Depends" and expr.args:
                target = self.index.ref(expr.args[0], scope)
                return target is not None and target[0] == "func" and ("func", target[1]) in self.carriers
            if name in ("RunnableSequence", "LLMChain", "ConversationChain", "RunnableParallel"):
                return any(self.carries(a, scope, depth + 1) for a in [*expr.args, *(k.value for k in expr.keywords)])
            return any(k.arg in ("llm", "model", "chat_model") and self.carries(k.value, scope, depth + 1)
                       for k in expr.keywords)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitOr):
            return self.carries(expr.left, scope, depth + 1) or self.carries(expr.right, scope, depth + 1)
        if isinstance(expr, ast.IfExp):
            return self.carries(expr.body, scope, depth + 1) or self.carries(expr.orelse, scope, depth + 1)
        if isinstance(expr, ast.BoolOp):
            return any(self.carries(v, scope, depth + 1) for v in expr.values)
        if isinstance(expr, ast.Await):
            return self.carries(expr.value, scope, depth + 1)
        if isinstance(expr, ast.NamedExpr):
            return self.carries(expr.value, scope, depth + 1)
        return False

    def _target(self, target: ast.AST, scope: Scope) -> tuple | None:
        if isinstance(target, ast.Name):
            owner = scope
            if target.id in scope.globals:
                owner = scope.module.scope
            return ("var", owner.key, target.id)
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and scope.cls \
                and target.value.id == scope.self_name:
            return ("attr", scope.cls.key, target.attr)
        return None

    def _add(self, key: tuple | None) -> bool:
        if key is None or key in self.carriers:
            return False
        self.carriers.add(key)
        return True

    def _run(self) -> None:
        scopes = [s for m in self.index.modules.values() for s in m.scopes]
        for _ in range(12):
            changed = False
            for scope in scopes:
                for node in scope.own_nodes():
                    changed |= self._step(node, scope)
            if not changed:
                break

    def _step(self, node: ast.AST, scope: Scope) -> bool:
        changed = False
        if isinstance(node, ast.Assign) and self.carries(node.value, scope):
            for t in node.targets:
                changed |= self._add(self._target(t, scope))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None \
                and self.carries(node.value, scope):
            changed |= self._add(self._target(node.target, scope))
        elif isinstance(node, ast.Return) and scope.kind == "function" and self.carries(node.value, scope):
            changed |= self._add(("func", scope.key))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            child = next((s for s in scope.module.scopes if s.node is node), None)
            if child is not None:
                args = node.args.posonlyargs + node.args.args
                for arg, default in zip(args[len(args) - len(node.args.defaults):], node.args.defaults):
                    if self.carries(default, scope):
                        changed |= self._add(("var", child.key, arg.arg))
                for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults):
                    if default is not None and self.carries(default, scope):
                        changed |= self._add(("var", child.key, arg.arg))
        elif isinstance(node, ast.Call):
            r = self.index.ref(node.func, scope)
            if r is not None and r[0] == "func":
                callee = self.index.scope_of(r[1])
                if callee is not None:
                    params = [a.arg for a in callee.node.args.posonlyargs + callee.node.args.args]
                    if callee.cls is not None and params:
                        params = params[1:]
                    for i, arg in enumerate(node.args):
                        if i < len(params) and self.carries(arg, scope):
                            changed |= self._add(("var", callee.key, params[i]))
                    for kw in node.keywords:
                        if kw.arg and self.carries(kw.value, scope):
                            changed |= self._add(("var", callee.key, kw.arg))
            if isinstance(node.func, ast.Attribute) and node.func.attr in STREAM_METHODS and not self.stream_at \
                    and self.carries(node.func.value, scope):
                self.stream_at = f"{ev(scope.module.rel, node.lineno)} .{node.func.attr}()"
        return changed


def _dict_literal(index: PyIndex, expr: ast.AST, scope: Scope, depth: int = 0) -> tuple[ast.Dict, Scope] | None:
    """The dict literal a name is bound to (in its own scope or the module's)."""
    if isinstance(expr, ast.Dict):
        return expr, scope
    if depth > 3 or not isinstance(expr, (ast.Name, ast.Attribute)):
        return None
    r = index.ref(expr, scope)
    if r is None or r[0] != "var":
        return None
    owner = index.scope_of(r[1])
    if owner is None:
        return None
    for node in owner.own_nodes():
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == r[2] for t in node.targets):
            return _dict_literal(index, node.value, owner, depth + 1)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == r[2] \
                and node.value is not None:
            return _dict_literal(index, node.value, owner, depth + 1)
    return None


def _str_keys(d: ast.Dict) -> list[str]:
    return [k.value for k in d.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]


def _kw_streaming(index: PyIndex, call: ast.Call, scope: Scope) -> bool:
    for kw in call.keywords:
        if kw.arg == "streaming" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
            return True
        if kw.arg is None:
            found = _dict_literal(index, kw.value, scope)
            if found:
                d, _ = found
                for k, v in zip(d.keys, d.values):
                    if isinstance(k, ast.Constant) and k.value == "streaming" and isinstance(v, ast.Constant) \
                            and v.value is True:
                        return True
    return False


def setting_ref(index: PyIndex, expr: ast.AST | None, scope: Scope, depth: int = 0) -> str | None:
    """The settings field or constant a value comes from: `settings.ollama_url` → ollama_url, a constant
    `OLLAMA_HOST` → OLLAMA_HOST, a local `base_url = PROVIDERS[...]` → that dict's "ollama" entry's."""
    if expr is None or depth > 5:
        return None
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Call):
        name = index.class_name_of(expr.func, scope)
        if name in ("str", "int", "float") and expr.args:
            return setting_ref(index, expr.args[0], scope, depth + 1)
        if isinstance(expr.func, ast.Attribute) and expr.func.attr == "get" and expr.args:
            return _dict_entry(index, expr.func.value, scope, depth)
        return None
    if isinstance(expr, ast.Subscript):
        return _dict_entry(index, expr.value, scope, depth)
    if isinstance(expr, ast.Name):
        r = index.ref(expr, scope)
        if r is not None and r[0] == "var" and r[1][1]:  # a local of a function: follow its assignment
            owner = index.scope_of(r[1])
            for node in owner.own_nodes() if owner else []:
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id
                                                        for t in node.targets):
                    return setting_ref(index, node.value, owner, depth + 1)
            return None
        return expr.id
    return None


def _dict_entry(index: PyIndex, dict_expr: ast.AST, scope: Scope, depth: int) -> str | None:
    found = _dict_literal(index, dict_expr, scope)
    if not found:
        return None
    d, owner = found
    for k, v in zip(d.keys, d.values):
        if isinstance(k, ast.Constant) and isinstance(k.value, str) and "ollama" in k.value.lower():
            return setting_ref(index, v, owner, depth + 1)
    return None


def analyse_call_sites(index: PyIndex) -> list[CallSite]:
    sites = []
    for site, call, scope in call_sites(index):
        flow = Flow(index, call)
        if _kw_streaming(index, call, scope):
            site.streaming, site.why_streaming = True, f"{ev(site.file, site.line)} streaming=True"
        elif flow.stream_at:
            site.streaming, site.why_streaming = True, f"streamed at {flow.stream_at}"
        if site.cls in OLLAMA_CLASSES or site.cls.startswith("ollama.") or site.cls == "Ollama":
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            site.kwargs = {"base_url": setting_ref(index, kw.get("base_url") or kw.get("host"), scope),
                           "model": setting_ref(index, kw.get("model"), scope)}
        sites.append(site)
    return sites


# ---- settings ---------------------------------------------------------------------------------------
@dataclass
class SettingField:
    name: str
    env: str  # the environment variable it is read from
    default: Any
    line: int


@dataclass
class SettingsInfo:
    style: str  # pydantic_v2 | pydantic_v1 | os_getenv | dataclass
    file: str
    module: str
    cls: str | None
    line: int
    case_sensitive: bool
    env_prefix: str
    fields: dict[str, SettingField] = field(default_factory=dict)
    config_line: int | None = None
    ollama_url_name: str | None = None
    ollama_model_name: str | None = None

    def to_dict(self) -> dict:
        return {"style": self.style, "file": self.file, "class": self.cls, "case_sensitive": self.case_sensitive,
                "env_prefix": self.env_prefix, "ollama_url_name": self.ollama_url_name,
                "ollama_model_name": self.ollama_model_name}

    def env_of(self, name: str | None) -> str | None:
        return self.fields[name].env if name in self.fields else None


def _is_getenv(index: PyIndex, node: ast.AST, scope: Scope) -> tuple[str, Any] | None:
    """`os.getenv("X", d)`, `os.environ.get("X", d)`, `os.environ["X"]`, `environ.get` … → (X, d)."""
    def const(n):
        return n.value if isinstance(n, ast.Constant) else None

    if isinstance(node, ast.Call) and node.args and isinstance(const(node.args[0]), str):
        f = node.func
        dotted = _dotted(f)
        if dotted in ("os.getenv", "getenv", "os.environ.get", "environ.get", "os.environ.setdefault"):
            return node.args[0].value, const(node.args[1]) if len(node.args) > 1 else None
    if isinstance(node, ast.Subscript) and _dotted(node.value) in ("os.environ", "environ") \
            and isinstance(const(node.slice), str):
        return node.slice.value, None
    return None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _getenv_in(index: PyIndex, expr: ast.AST, scope: Scope) -> tuple[str, Any] | None:
    for node in ast.walk(expr):
        found = _is_getenv(index, node, scope)
        if found:
            return found
    return None


def _const(node: ast.AST | None) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    return None


def _alias(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and index_name(node.func) in ("AliasChoices", "AliasPath") and node.args:
        return _alias(node.args[0])
    return None


def index_name(func: ast.AST) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _pydantic_version(module: PyModule, base: ast.AST) -> str | None:
    if isinstance(base, ast.Attribute) and base.attr == "BaseSettings":
        dotted = _dotted(base.value)
        return "pydantic_v2" if dotted.startswith("pydantic_settings") else "pydantic_v1"
    if isinstance(base, ast.Name) and base.id == "BaseSettings":
        # the first import of BaseSettings in the file decides (a try: … except ImportError: fallback after it)
        for node in sorted((n for n in ast.walk(module.tree) if isinstance(n, ast.ImportFrom)),
                           key=lambda n: n.lineno):
            if any((a.asname or a.name) == "BaseSettings" for a in node.names):
                return "pydantic_v2" if (node.module or "").startswith("pydantic_settings") else "pydantic_v1"
        return "pydantic_v2"
    return None


def _config_values(cls: ast.ClassDef) -> tuple[dict[str, Any], int | None]:
    values: dict[str, Any] = {}
    line = None
    for kw in cls.keywords:
        values[kw.arg] = _const(kw.value)
    for node in cls.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "model_config" for t in targets) and node.value is not None:
                line = node.lineno
                v = node.value
                if isinstance(v, ast.Call):
                    values.update({k.arg: _const(k.value) for k in v.keywords if k.arg})
                elif isinstance(v, ast.Dict):
                    values.update({_const(k): _const(val) for k, val in zip(v.keys, v.values) if k is not None})
        elif isinstance(node, ast.ClassDef) and node.name == "Config":
            line = node.lineno
            for inner in node.body:
                if isinstance(inner, ast.Assign):
                    for t in inner.targets:
                        if isinstance(t, ast.Name):
                            values[t.id] = _v1_fields(inner.value) if t.id == "fields" else _const(inner.value)
    return values, line


def _v1_fields(node: ast.AST) -> dict[str, str]:
    """pydantic v1 `Config.fields = {"name": {"env": "NAME"}}` (or `{"name": "NAME"}`): field -> env."""
    out = {}
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                env = _const(v) if isinstance(v, ast.Constant) else next(
                    (_const(val) for kk, val in zip(v.keys, v.values) if _const(kk) == "env"), None) \
                    if isinstance(v, ast.Dict) else None
                if isinstance(env, str):
                    out[k.value] = env
    return out


def settings_candidates(index: PyIndex) -> list[SettingsInfo]:
    out: list[SettingsInfo] = []
    for module in index.modules.values():
        top = module.scope
        constants: dict[str, SettingField] = {}
        for node in module.tree.body:
            if isinstance(node, ast.ClassDef):
                scope = top.classes.get(node.name)
                style = next((v for v in (_pydantic_version(module, b) for b in node.bases) if v), None)
                is_dataclass = any(index_name(d.func if isinstance(d, ast.Call) else d) == "dataclass"
                                   for d in node.decorator_list)
                fields: dict[str, SettingField] = {}
                config, config_line = _config_values(node)
                prefix = str(config.get("env_prefix") or "")
                case = bool(config.get("case_sensitive", False))
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        name = item.target.id
                        if name.startswith("_") or name == "model_config":
                            continue
                        env, default = None, _const(item.value)
                        if isinstance(item.value, ast.Call) and index_name(item.value.func) == "Field":
                            kws = {k.arg: k.value for k in item.value.keywords if k.arg}
                            env = _alias(kws.get("validation_alias")) or _alias(kws.get("alias")) or _alias(kws.get("env"))
                            default = _const(kws.get("default")) if "default" in kws else (
                                _const(item.value.args[0]) if item.value.args else None)
                        getenv = _getenv_in(index, item.value, scope) if item.value is not None else None
                        if style is None and getenv:
                            env, default = getenv
                        if style == "pydantic_v1" and env is None:
                            env = (config.get("fields") or {}).get(name)
                        if style is not None and env is None:
                            env = prefix + name
                            env = env if case else env.upper()
                        if env is not None:
                            fields[name] = SettingField(name, env, default, item.lineno)
                    elif isinstance(item, ast.Assign) and style is None and not is_dataclass:
                        getenv = _getenv_in(index, item.value, scope)
                        for t in item.targets:
                            if isinstance(t, ast.Name) and getenv:
                                fields[t.id] = SettingField(t.id, getenv[0], getenv[1], item.lineno)
                if style is not None:
                    out.append(SettingsInfo(style, module.rel, module.name, node.name, node.lineno, case, prefix,
                                            fields, config_line))
                elif fields:
                    out.append(SettingsInfo("dataclass" if is_dataclass else "os_getenv", module.rel, module.name,
                                            node.name, node.lineno, True, "", fields))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                getenv = _getenv_in(index, node.value, top)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name) and getenv:
                        constants[t.id] = SettingField(t.id, getenv[0], getenv[1], node.lineno)
        if constants:
            first = min(f.line for f in constants.values())
            out.append(SettingsInfo("os_getenv", module.rel, module.name, None, first, True, "", constants))
    return out


_URL_RE = re.compile(r"ollama.*(url|host|base|endpoint|api)|(url|host|endpoint).*ollama", re.I)
_MODEL_RE = re.compile(r"ollama.*model|model.*ollama", re.I)


def choose_settings(candidates: list[SettingsInfo], sites: list[CallSite]) -> tuple[SettingsInfo | None, list[str]]:
    """The settings holding the Ollama URL and model: named by the Ollama call sites' base_url= and model=,
    else by their names. Returns it and the evidence for its names."""
    names = [(s, s.kwargs.get("base_url"), s.kwargs.get("model")) for s in sites if s.kwargs]
    scored = []
    for cand in candidates:
        url = next((u for _, u, _ in names if u in cand.fields), None)
        model = next((m for _, _, m in names if m in cand.fields), None)
        how = "call site"
        if url is None:
            url = next((f for f, info in cand.fields.items() if _URL_RE.search(f) or _URL_RE.search(info.env)), None)
            how = "name"
        if model is None:
            model = next((f for f, info in cand.fields.items()
                          if (_MODEL_RE.search(f) or _MODEL_RE.search(info.env)) and "embed" not in f.lower()), None)
        score = (2 if how == "call site" and url else 1 if url else 0) + (1 if model else 0)
        scored.append((score, cand, url, model))
    scored = [s for s in scored if s[0] > 0]
    if not scored:
        return None, []
    scored.sort(key=lambda s: -s[0])
    top, best, url, model = scored[0]
    best.ollama_url_name, best.ollama_model_name = url, model
    return best, [f"{c.file}:{c.line}" for score, c, _u, _m in scored[1:] if score == top]


# ---- provider switch --------------------------------------------------------------------------------
@dataclass
class ProviderSwitch:
    file: str
    line: int
    variable: str
    values: list[str]
    style: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _switch_variable(index: PyIndex, expr: ast.AST, scope: Scope, settings: SettingsInfo | None,
                     all_settings: list[SettingsInfo]) -> str | None:
    getenv = _getenv_in(index, expr, scope)
    if getenv:
        return getenv[0]
    name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else None
    if name is None:
        return None
    for cand in ([settings] if settings else []) + all_settings:
        if cand and name in cand.fields:
            return cand.fields[name].env
    return None


def provider_switch(index: PyIndex, settings: SettingsInfo | None, all_settings: list[SettingsInfo],
                    llm_files: set[str]) -> ProviderSwitch | None:
    dict_found, chain_found = [], []
    for module in index.modules.values():
        for scope in module.scopes:
            for node in scope.own_nodes():
                lookup = None
                if isinstance(node, ast.Subscript):
                    lookup = (node.value, node.slice)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                        and node.args:
                    lookup = (node.func.value, node.args[0])
                if lookup is not None:
                    found = _dict_literal(index, lookup[0], scope)
                    keys = _str_keys(found[0]) if found else []
                    if len(keys) >= 2 and sum(k.lower() in PROVIDERS for k in keys) >= 1:
                        var = _switch_variable(index, lookup[1], scope, settings, all_settings)
                        if var:
                            dict_found.append(ProviderSwitch(module.rel, node.lineno, var, keys, "dict"))
                if isinstance(node, ast.If):
                    test = node.test
                    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq) \
                            and isinstance(_const(test.comparators[0]), str) \
                            and _const(test.comparators[0]).lower() in PROVIDERS:
                        var = _switch_variable(index, test.left, scope, settings, all_settings)
                        if var:
                            values = [_const(test.comparators[0])]
                            other = node.orelse
                            while len(other) == 1 and isinstance(other[0], ast.If):
                                t = other[0].test
                                if isinstance(t, ast.Compare) and isinstance(_const(t.comparators[0]), str):
                                    values.append(_const(t.comparators[0]))
                                other = other[0].orelse
                            chain_found.append((module.rel, node, var, values, scope))
                if isinstance(node, ast.Match):
                    values = [_const(c.pattern.value) for c in node.cases
                              if isinstance(c.pattern, ast.MatchValue) and isinstance(_const(c.pattern.value), str)]
                    var = _switch_variable(index, node.subject, scope, settings, all_settings)
                    if var and any(v.lower() in PROVIDERS for v in values):
                        chain_found.append((module.rel, node, var, values, scope))
    if dict_found:
        dict_found.sort(key=lambda s: (s.file not in llm_files, s.file, s.line))
        return dict_found[0]
    if chain_found:
        chain_found.sort(key=lambda c: (c[0] not in llm_files, c[0], c[1].lineno))
        rel, node, var, values, _ = chain_found[0]
        default = None
        for cand in all_settings:
            for f in cand.fields.values():
                if f.env == var and isinstance(f.default, str) and f.default not in values:
                    default = f.default
        return ProviderSwitch(rel, node.lineno, var, values + ([default] if default else []), "if_chain")
    return None


def _defined_in(scope, name: str) -> tuple | None:
    """What `name` is at the top of a module: a function, a class or a variable (in that order), or None."""
    if name in scope.funcs:
        return ("func", scope.funcs[name].key)
    if name in scope.classes:
        return ("class", scope.classes[name].key)
    if name in scope.locals:
        return ("var", scope.key, name)
    return None


# ---- tool calling: what vLLM must be started with ------------------------------------------------------
TOOL_METHODS = ("bind_tools", "with_structured_output")


def tool_calling_sites(source: Path) -> list[str]:
    """`file:line what` for each call that makes the model call tools or answer to a schema — `.bind_tools(…)`,
    `.with_structured_output(…)`, any call with `tools=` (an agent, `.bind(tools=…)`, `invoke(…, tools=…)`).
    On vLLM each needs `--enable-auto-tool-choice --tool-call-parser`, else HTTP 400. Tests are skipped, as
    everywhere in the backend's analysis."""
    found = []
    for path in python_files(source):
        tree, _ = parse_python(path)
        if tree is None:
            continue
        rel = relpath(path, source)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Attribute) and node.func.attr in TOOL_METHODS:
                found.append((rel, node.lineno, f".{node.func.attr}()"))
            elif any(k.arg == "tools" for k in node.keywords):
                found.append((rel, node.lineno, "tools="))
    return [f"{ev(rel, line)} {what}" for rel, line, what in sorted(found)]
