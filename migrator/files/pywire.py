"""Wiring the LLM_BACKEND switch into a backend's own source, in the style it is written in.

`plan_wiring()` reads the backend (with `pysource`, never importing it) and returns every edit the switch
needs, or every reason it cannot be made — computed in full before anything is written, so phase2's
scaffold leaves the project fully wired or untouched:

- the settings the loader really reads: three settings whose environment names are exactly LLM_BACKEND,
  VLLM_BASE_URL and VLLM_MODEL (the names phase3/phase4/rollback set), declared the way the project
  declares its others — pydantic v2/v1 fields (an alias where `env_prefix` or case would rename them),
  dataclass fields or module constants read with the project's own `os.getenv` spelling;
- each Ollama call site (`ChatOllama(…)`, `OllamaLLM(…)`) routed through `select_llm(ChatOllama, backend=…,
  vllm_base_url=…, vllm_model=…, …)` from a small module written beside it, which builds the same Ollama
  object when the backend is "ollama" and the matching OpenAI-compatible class (ChatOpenAI, or OpenAI for
  completion models) on vLLM when it is "vllm";
- `langchain-openai` in the project's dependency file (requirements, PEP 621, poetry or Pipfile).

`switch_status()` is the read-only half: whether the backend, as it is now, reads the three names and
chooses every Ollama call site by LLM_BACKEND.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from migrator.files.pysource import (OLLAMA_CLASSES, CallSite, PyIndex, PyModule, Scope,
                                     SettingsInfo, analyse_call_sites, call_sites, ev, parse_with, relpath,
                                     settings_candidates)

ENV_NAMES = ("LLM_BACKEND", "VLLM_BASE_URL", "VLLM_MODEL")
SWITCH_MODULE = "llm_switch"
SWITCH_FUNCTION = "select_llm"
DEPENDENCY = "langchain-openai"
_COMPLETION_CLASSES = {"OllamaLLM", "Ollama"}


@dataclass
class Source:
    """The backend as pysource reads it: modules, settings candidates, LLM call sites."""

    root: Path
    backend: Path
    index: PyIndex
    settings: SettingsInfo | None
    sites: list[tuple[CallSite, ast.Call, Scope]]
    ambiguous: list[str] = field(default_factory=list)  # several settings classes name Ollama


def guess_import_root(backend: Path) -> Path:
    """`src/` layouts import from src; others from the backend directory (as init guesses)."""
    src = backend / "src"
    return src if src.is_dir() and not (src / "__init__.py").exists() else backend


def read_source(root: Path, backend: Path, settings_file: Path, import_root: Path | None = None) -> Source:
    index = PyIndex(root, backend, import_root or guess_import_root(backend))
    rel = relpath(settings_file, root)
    candidates = [c for c in settings_candidates(index) if c.file == rel]
    ollama = [c for c in candidates if any(re.search("ollama", f, re.I) for f in c.fields)]
    settings = (ollama or candidates or [None])[0]
    ambiguous = [c.cls or "module constants" for c in (ollama if len(ollama) > 1 else [])]
    sites = [s for s in call_sites(index) if s[0].cls in OLLAMA_CLASSES | {"Ollama"} or s[0].cls.startswith("ollama.")]
    return Source(root, backend, index, settings, sites, ambiguous)


def env_matches(settings: SettingsInfo, env: str, wanted: str) -> bool:
    return env == wanted if settings.case_sensitive and settings.style.startswith("pydantic") else \
        env.upper() == wanted.upper()


def fields_for(settings: SettingsInfo) -> dict[str, str]:
    """Env name -> the settings field that reads it (only the three the switch needs)."""
    found = {}
    for wanted in ENV_NAMES:
        for f in settings.fields.values():
            if env_matches(settings, f.env, wanted):
                found[wanted] = f.name
                break
    return found


def field_names(settings: SettingsInfo) -> dict[str, str]:
    """The names new fields get: the project's case convention (UPPERCASE fields or constants keep it)."""
    names = [f for f in settings.fields if not f.startswith("_")]
    upper = settings.style == "os_getenv" or (names and all(n.isupper() for n in names))
    return {env: env if upper else env.lower() for env in ENV_NAMES}


# ---- text edits ---------------------------------------------------------------------------------------
@dataclass
class Edit:
    """Replace source[start:end] (character offsets) with text."""

    start: int
    end: int
    text: str


def _offsets(text: str) -> list[int]:
    starts, pos = [0], 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        starts.append(pos)
    return starts


def _at(text: str, line: int, col: int) -> int:
    """ast's (line, utf-8 byte column) as a character offset."""
    starts = _offsets(text)
    line_text = text[starts[line - 1]:starts[line]] if line < len(starts) else text[starts[line - 1]:]
    return starts[line - 1] + len(line_text.encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def _end_of_line(text: str, line: int) -> int:
    starts = _offsets(text)
    return starts[line] if line < len(starts) else len(text)


def apply_edits(text: str, edits: list[Edit]) -> str:
    for e in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        text = text[:e.start] + e.text + text[e.end:]
    return text


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _indent_of(text: str, line: int) -> str:
    row = text.splitlines()[line - 1]
    return row[: len(row) - len(row.lstrip())]


def _insert_import(module: PyModule, statement: str) -> Edit:
    """After the module's last top-level import (after its docstring when it has none)."""
    text, nl = module.text, _newline(module.text)
    body = module.tree.body
    imports = [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))
               and n.col_offset == 0][-1:]
    if imports:
        pos = _end_of_line(text, imports[0].end_lineno)
        return Edit(pos, pos, statement + nl)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        pos = _end_of_line(text, body[0].end_lineno)
        return Edit(pos, pos, nl + statement + nl)
    return Edit(0, 0, statement + nl)


# ---- settings -----------------------------------------------------------------------------------------
def _getenv_template(module: PyModule, settings: SettingsInfo) -> tuple[ast.AST, ast.Call] | None:
    """A declaration of the settings to copy: its value's getenv call holds a string default and is
    not wrapped in a conversion (float(os.getenv(…)) would be a wrong model for a string)."""
    for f in sorted(settings.fields.values(), key=lambda f: -f.line):
        stmt = next((n for n in ast.walk(module.tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
                     and n.lineno == f.line), None)
        if stmt is None or stmt.value is None:
            continue
        calls = [n for n in ast.walk(stmt.value) if isinstance(n, ast.Call) and n.args
                 and isinstance(n.args[0], ast.Constant) and n.args[0].value == f.env]
        if not calls:
            continue
        call = calls[0]
        parents = [n for n in ast.walk(stmt.value) if isinstance(n, ast.Call) and n is not call
                   and any(a is call for a in ast.walk(n))]
        converted = any(getattr(p.func, "id", "") in ("int", "float", "bool", "Path") for p in parents)
        if not converted and (len(call.args) < 2 or isinstance(getattr(call.args[1], "value", None), str)):
            return stmt, call
    return None


def settings_edits(module: PyModule, settings: SettingsInfo, defaults: dict[str, str],
                   names: dict[str, str]) -> tuple[list[Edit], list[str]]:
    """The declarations of the missing switch settings, in the project's style; or why not."""
    present = fields_for(settings)
    missing = [env for env in ENV_NAMES if env not in present]
    if not missing:
        return [], []
    taken = [names[env] for env in missing if names[env] in settings.fields]
    if taken:
        return [], [f"{ev(settings.file, settings.fields[taken[0]].line)}: `{taken[0]}` is declared but reads "
                    f"{settings.fields[taken[0]].env}, not {missing[0]}: make it read {missing[0]}"]
    text, nl = module.text, _newline(module.text)
    if settings.style in ("pydantic_v2", "pydantic_v1"):
        return _pydantic_edits(module, settings, missing, names, defaults)
    template = _getenv_template(module, settings)
    if template is None:
        lines = "; ".join(f'{names[e]} = os.getenv("{e}", {json.dumps(defaults[e])})' for e in missing)
        return [], [f"{ev(settings.file, settings.line)}: no string setting read with os.getenv/os.environ to copy "
                    f"the style of: add {lines} by hand"]
    stmt, call = template
    source = ast.get_source_segment(text, stmt)
    call_text = ast.get_source_segment(text, call)
    func = ast.get_source_segment(text, call.func)
    indent = _indent_of(text, stmt.lineno)
    added = []
    for env in missing:
        new_call = f'{func}("{env}", {json.dumps(defaults[env])})'
        declaration = source.replace(call_text, new_call, 1)
        target = ast.get_source_segment(text, stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0])
        declaration = names[env] + declaration[len(target):]
        added.append(indent + declaration + nl)
    pos = _end_of_line(text, max(f.line for f in settings.fields.values()) if settings.cls is None
                       else _last_field_end(module, settings))
    return [Edit(pos, pos, "".join(added))], []


def _last_field_end(module: PyModule, settings: SettingsInfo) -> int:
    cls = next(n for n in module.tree.body if isinstance(n, ast.ClassDef) and n.name == settings.cls)
    fields = [i for i in cls.body if isinstance(i, (ast.AnnAssign, ast.Assign))
              and not any(getattr(t, "id", "") == "model_config"
                          for t in ([i.target] if isinstance(i, ast.AnnAssign) else i.targets))]
    return (fields[-1] if fields else cls.body[-1]).end_lineno


def _pydantic_edits(module: PyModule, settings: SettingsInfo, missing: list[str], names: dict[str, str],
                    defaults: dict[str, str]) -> tuple[list[Edit], list[str]]:
    text, nl = module.text, _newline(module.text)
    cls = next(n for n in module.tree.body if isinstance(n, ast.ClassDef) and n.name == settings.cls)
    fields = [i for i in cls.body if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
              and i.target.id != "model_config"]
    indent = _indent_of(text, (fields[-1] if fields else cls.body[0]).lineno)
    edits, problems, lines, renamed = [], [], [], {}
    for env in missing:
        name = names[env]
        derived = settings.env_prefix + name
        if env_matches(settings, derived, env):
            lines.append(f"{indent}{name}: str = {json.dumps(defaults[env])}{nl}")
        elif settings.style == "pydantic_v2":
            uses_alias = "alias=" in text and "validation_alias=" not in text
            keyword = "alias" if uses_alias else "validation_alias"
            lines.append(f'{indent}{name}: str = Field(default={json.dumps(defaults[env])}, {keyword}="{env}"){nl}')
        else:  # pydantic v1: Config.fields names the env (env_prefix does not apply to it)
            lines.append(f"{indent}{name}: str = {json.dumps(defaults[env])}{nl}")
            renamed[name] = env
    pos = _end_of_line(text, _last_field_end(module, settings))
    edits.append(Edit(pos, pos, "".join(lines)))
    if any("Field(" in line for line in lines) and "Field" not in module.imports:
        edits.append(_insert_import(module, "from pydantic import Field"))
    if renamed:
        config = next((n for n in cls.body if isinstance(n, ast.ClassDef) and n.name == "Config"), None)
        entry = "fields = {" + ", ".join(f'"{k}": {{"env": "{v}"}}' for k, v in renamed.items()) + "}"
        if config is None:
            problems.append(f"{ev(settings.file, settings.line)}: {settings.cls} has no `class Config:` to name "
                            f"the env of {', '.join(renamed)}: add `{entry}` to it")
        elif any(isinstance(i, ast.Assign) and any(getattr(t, "id", "") == "fields" for t in i.targets)
                 for i in config.body):
            problems.append(f"{ev(settings.file, config.lineno)}: Config.fields exists: add "
                            + ", ".join(f'"{k}": {{"env": "{v}"}}' for k, v in renamed.items()) + " to it")
        else:
            inner = _indent_of(text, config.body[-1].lineno)
            pos = _end_of_line(text, config.end_lineno)
            edits.append(Edit(pos, pos, f"{inner}{entry}{nl}"))
    return edits, problems


# ---- call sites ---------------------------------------------------------------------------------------
def _settings_ref(index: PyIndex, call: ast.Call, scope: Scope, settings: SettingsInfo,
                  text: str) -> tuple[str, str] | None:
    """How this call reaches the settings: ("attr", "settings") for `settings.ollama_url`,
    ("name", module) for a constant imported from (or defined in) a module."""
    values = [k.value for k in call.keywords if k.arg in ("base_url", "host", "model")] + \
             [k.value for k in call.keywords if k.arg not in ("base_url", "host", "model")]
    for value in values:
        for node in ast.walk(value):
            if isinstance(node, ast.Attribute) and node.attr in settings.fields:
                return "attr", ast.get_source_segment(text, node.value)
            if isinstance(node, ast.Name) and node.id in settings.fields and settings.cls is None:
                return "name", node.id
    return None


def _module_name_of(index: PyIndex, rel: str) -> str | None:
    return next((m.name for m in index.modules.values() if m.rel == rel), None)


def call_site_edits(src: Source, names: dict[str, str]) -> tuple[dict[str, list[Edit]], list[str], set[str]]:
    """Per file, the edits routing each Ollama call site through select_llm (not those the project
    already switches by hand); problems; the modules edited."""
    edits: dict[str, list[Edit]] = {}
    problems: list[str] = []
    settings = src.settings
    modules = {m.rel: m for m in src.index.modules.values()}
    routes = _routes(src, names["LLM_BACKEND"], names["VLLM_BASE_URL"])
    for site, call, scope in src.sites:
        if _guarded(scope, names["LLM_BACKEND"], routes):
            continue
        module = modules[site.file]
        text = module.text
        where = ev(site.file, site.line)
        if site.cls.startswith("ollama."):
            problems.append(f"{where}: the ollama client ({site.cls}) is used directly: graphrag-migrate wires "
                            "LangChain models only; choose the client by LLM_BACKEND there by hand")
            continue
        ref = _settings_ref(src.index, call, scope, settings, text) if settings else None
        if ref is None:
            problems.append(f"{where}: cannot tell how {site.cls}(…) reads the settings (no argument from "
                            f"{settings.file if settings else 'a settings module'}): pass it "
                            f"backend=…, vllm_base_url=… and vllm_model=… from your settings by hand")
            continue
        kind, base = ref
        args = {env: f"{base}.{names[env]}" if kind == "attr" else names[env] for env in ENV_NAMES}
        func = ast.get_source_segment(text, call.func)
        start = _at(text, call.func.lineno, call.func.col_offset)
        open_paren = text.index("(", _at(text, call.func.end_lineno, call.func.end_col_offset))
        rest = ("," if text[open_paren + 1:open_paren + 2] in ("\n", "\r") else ", ") \
            if call.args or call.keywords else ""
        inserted = f"{func}, backend={args['LLM_BACKEND']}, vllm_base_url={args['VLLM_BASE_URL']}, " \
                   f"vllm_model={args['VLLM_MODEL']}" + rest
        file_edits = edits.setdefault(site.file, [])
        file_edits.append(Edit(start, open_paren + 1, f"{SWITCH_FUNCTION}(" + inserted))
        if kind == "name" and module.rel != settings.file:
            imported = module.imports.get(base)
            node = next((n for n in ast.walk(module.tree) if isinstance(n, ast.ImportFrom)
                         and any((a.asname or a.name) == base for a in n.names)), None)
            if imported is None or node is None:
                problems.append(f"{where}: {base} is not imported from the settings module: import "
                                f"{', '.join(names.values())} from it by hand")
                continue
            statement = f"from {'.' * node.level}{node.module or ''} import " + ", ".join(names[e] for e in ENV_NAMES)
            pos = _end_of_line(text, node.end_lineno)
            if not any(e.text == statement + _newline(text) for e in file_edits):
                file_edits.append(Edit(pos, pos, statement + _newline(text)))
    return edits, problems, set(edits)


# ---- dependency file ----------------------------------------------------------------------------------
def listed(path: Path, text: str) -> bool:
    """langchain-openai among the file's requirements (a TOML file by its parsed lists, not a substring)."""
    if path.suffix in (".toml",) or path.name == "Pipfile":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return False
        poetry = doc.get("tool", {}).get("poetry", {})
        names = [_req_name(r) for r in doc.get("project", {}).get("dependencies", []) if isinstance(r, str)]
        names += [_req_name(n) for group in (poetry.get("dependencies", {}), doc.get("packages", {}))
                  if isinstance(group, dict) for n in group]
        return DEPENDENCY in names
    return any(_req_name(line) == DEPENDENCY for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith(("#", "-")))


def dependency_text(path: Path, text: str | None) -> tuple[str | None, str | None]:
    """The dependency file with langchain-openai added; (None, why) when it cannot be edited safely."""
    if text is not None and listed(path, text):
        return text, None
    if path.suffix in (".txt", ".in") or path.name.startswith("requirements"):
        text = text or ""
        nl = _newline(text) if text else "\n"
        if text and not text.endswith("\n"):
            text += nl
        return text + DEPENDENCY + nl, None
    if text is None:
        return None, f"{path.name} not found"
    if path.name == "pyproject.toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            return None, f"{path.name} is not valid TOML ({exc})"
        if "dependencies" in doc.get("project", {}):
            updated = _pep621(text)
            check = lambda d: any(_req_name(r) == DEPENDENCY for r in d.get("project", {}).get("dependencies", []))
        elif "dependencies" in doc.get("tool", {}).get("poetry", {}):
            updated = _table_key(text, "tool.poetry.dependencies")
            check = lambda d: DEPENDENCY in d["tool"]["poetry"]["dependencies"]
        else:
            return None, f"{path.name} has neither [project].dependencies nor [tool.poetry.dependencies]"
    elif path.name == "Pipfile":
        updated = _table_key(text, "packages")
        check = lambda d: DEPENDENCY in d.get("packages", {})
    else:
        return None, f"{path.name}: not a dependency file graphrag-migrate knows how to edit"
    if updated is None:
        return None, f"{path.name}: cannot tell where its dependency list ends"
    try:
        ok = check(tomllib.loads(updated))
    except (tomllib.TOMLDecodeError, KeyError):
        ok = False
    return (updated, None) if ok else (None, f"{path.name}: adding {DEPENDENCY} would not read back")


def _req_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pep621(text: str) -> str | None:
    """`"langchain-openai",` before the closing bracket of [project].dependencies, in its layout."""
    header = re.search(r"(?m)^\[project\]\s*$", text)
    if not header:
        return None
    array = re.compile(r"(?m)^dependencies\s*=\s*\[").search(text, header.end())
    next_table = re.compile(r"(?m)^\[").search(text, header.end())
    if not array or (next_table and next_table.start() < array.start()):
        return None
    i, depth, quote = array.end(), 1, None
    while i < len(text) and depth:
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            i = text.find("\n", i)
            if i < 0:
                return None
            continue
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        i += 1
    close = i - 1
    body = text[array.end():close]
    nl = _newline(text)
    if "\n" in body:  # one item per line: the same indent, a trailing comma after the last item
        items = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
        indent = (items[-1][: len(items[-1]) - len(items[-1].lstrip())] if items else "    ")
        stripped = body.rstrip()
        tail = body[len(stripped):]
        comma = "" if not stripped.strip() or stripped.endswith(",") or stripped.endswith("[") else ","
        new_body = stripped + comma + nl + f'{indent}"{DEPENDENCY}",' + (tail if "\n" in tail else nl)
    else:
        inner = body.strip()
        new_body = (inner + (", " if inner and not inner.endswith(",") else " " if inner else "")
                    + f'"{DEPENDENCY}"')
    return text[:array.end()] + new_body + text[close:]


def _table_key(text: str, table: str) -> str | None:
    """`langchain-openai = "*"` after the last key of [table]."""
    header = re.search(rf"(?m)^\[{re.escape(table)}\]\s*$", text)
    if not header:
        return None
    following = re.compile(r"(?m)^\[").search(text, header.end())
    end = following.start() if following else len(text)
    section = text[header.end():end]
    keys = [m for m in re.finditer(r"(?m)^[A-Za-z0-9_.\"'-]+\s*=.*$", section)]
    nl = _newline(text)
    pos = header.end() + (keys[-1].end() if keys else 0)
    return text[:pos] + f'{nl}{DEPENDENCY} = "*"' + text[pos:]


# ---- the whole plan -----------------------------------------------------------------------------------
@dataclass
class WiringPlan:
    files: dict[Path, str] = field(default_factory=dict)  # path -> its new text
    problems: list[str] = field(default_factory=list)
    routed: int = 0  # call sites routed through select_llm (not those the project switches by hand)


def plan_wiring(src: Source, defaults: dict[str, str], dependency_file: Path, switch_module_text: str,
                names: dict[str, str] | None = None) -> WiringPlan:
    """Every edit the switch needs (nothing is written here); `problems` non-empty = write nothing.
    `names`: env name -> the name a new setting gets (default: the project's case convention)."""
    plan = WiringPlan()
    settings = src.settings
    if src.ambiguous:
        plan.problems.append(f"{settings.file}: cannot tell which settings class to extend "
                             f"({', '.join(src.ambiguous)} all name Ollama settings): set backend.config_module to "
                             "a file with one, or add the settings by hand")
        return plan
    if settings is None:
        plan.problems.append("no settings class or os.getenv constants found in backend.config_module: "
                             "point it at the file that holds the Ollama URL")
        return plan
    modules = {m.rel: m for m in src.index.modules.values()}
    settings_module = modules[settings.file]
    names = dict(names or field_names(settings))
    names.update(fields_for(settings))  # settings already reading a name keep theirs
    per_file: dict[str, list[Edit]] = {}
    edits, problems = settings_edits(settings_module, settings, defaults, names)
    plan.problems += problems
    per_file.setdefault(settings.file, []).extend(edits)
    site_edits, problems, edited = call_site_edits(src, names)
    plan.problems += problems
    plan.routed = sum(1 for edits in site_edits.values() for e in edits if e.text.startswith(f"{SWITCH_FUNCTION}("))
    if not src.sites and not problems:
        status = switch_status(src)
        if not status.ok:
            plan.problems.append("no ChatOllama/OllamaLLM call site found to route through the switch "
                                 f"({'; '.join(status.problems)})")
    if edited:
        first = sorted(edited)[0]
        home_module = _module_name_of(src.index, first) or ""
        package = home_module.rpartition(".")[0] if not getattr(modules[first], "is_package", False) else home_module
        home = f"{package}.{SWITCH_MODULE}" if package else SWITCH_MODULE
        home_path = (src.root / first).parent / f"{SWITCH_MODULE}.py"
        if home_path.exists():
            plan.problems.append(f"{relpath(home_path, src.root)} exists and is not graphrag-migrate's: "
                                 "rename it, or wire the switch by hand")
        plan.files[home_path] = switch_module_text
        for rel in edited:
            module = modules[rel]
            file_edits = site_edits[rel]
            own = _module_name_of(src.index, rel) or ""
            own_package = own if getattr(module, "is_package", False) else own.rpartition(".")[0]
            # beside it: a relative import works however the package is put on sys.path
            spelled = f".{SWITCH_MODULE}" if package and own_package == package else home
            file_edits.append(_insert_import(module, f"from {spelled} import {SWITCH_FUNCTION}"))
            per_file.setdefault(rel, []).extend(file_edits)
    for rel, file_edits in per_file.items():
        if not file_edits:
            continue
        module = modules[rel]
        new_text = apply_edits(module.text, file_edits)
        bad_line = unparsed_line(new_text, module)
        if bad_line:  # ours to fix: never write a file that does not parse
            plan.problems.append(f"{rel}: the edited file would not parse (line {bad_line}): wire it by hand")
            continue
        plan.files[src.root / rel] = new_text
    dep_text = dependency_file.read_text(encoding="utf-8") if dependency_file.is_file() else None
    updated, why = dependency_text(dependency_file, dep_text)
    if why:
        plan.problems.append(f"{relpath(dependency_file, src.root)}: {why}: add {DEPENDENCY} by hand")
    elif updated != dep_text:
        plan.files[dependency_file] = updated
    return plan


def unparsed_line(text: str, module: PyModule) -> int | None:
    """The first line of the edited text that does not parse, or None. Lines this Python could not
    parse in the original either (newer syntax: a PEP 701 f-string read on 3.11) are the project's own
    target grammar, not our edit, and are skipped the same way pysource skipped them — unless the
    project's Python confirmed them (`module.judged_by`): then it judges the edited text whole."""
    if module.judged_by:
        try:
            _version, verdicts = parse_with(module.judged_by, {module.rel: text})
        except OSError:
            pass  # gone since it judged the original: this Python, with the project's own lines kept
        else:
            verdict = verdicts.get(module.rel)
            return int(verdict[0]) if verdict else None
    allowed = {module.text.splitlines()[n - 1] for n, _ in module.blanked}
    lines = text.splitlines()
    for _ in range(len(allowed) + 1):
        try:
            ast.parse("\n".join(lines))
            return None
        except SyntaxError as exc:
            n = exc.lineno or 0
            if not 0 < n <= len(lines) or lines[n - 1] not in allowed:
                return n or 1
            lines[n - 1] = lines[n - 1][: len(lines[n - 1]) - len(lines[n - 1].lstrip())] + "pass"
    return 1


# ---- the read-only check ------------------------------------------------------------------------------
@dataclass
class SwitchStatus:
    settings_ok: bool
    sites_ok: bool
    problems: list[str]
    fields: dict[str, str]  # env -> field

    @property
    def ok(self) -> bool:
        return self.settings_ok and self.sites_ok


def _refers(node: ast.AST, name: str) -> bool:
    return any((isinstance(n, ast.Attribute) and n.attr == name) or (isinstance(n, ast.Name) and n.id == name)
               for n in ast.walk(node))


@dataclass
class _Routes:
    """Where the backend already chooses by the switch: select_llm calls, OpenAI-compatible models on
    the vLLM URL setting (and whether each is streamed)."""

    select_llm_calls: int = 0
    openai_on_url: list[CallSite] = field(default_factory=list)


def _routes(src: Source, switch: str | None, url: str | None) -> _Routes:
    found = _Routes()
    streamed = {(s.file, s.line): s for s in analyse_call_sites(src.index) if s.cls == "ChatOpenAI"}
    for module in src.index.modules.values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name == SWITCH_FUNCTION and switch and any(k.arg == "backend" and _refers(k.value, switch)
                                                          for k in node.keywords):
                found.select_llm_calls += 1
            if name in ("ChatOpenAI", "OpenAI") and url and any(_refers(k.value, url) for k in node.keywords):
                site = streamed.get((module.rel, node.lineno)) or CallSite(module.rel, node.lineno, name, True)
                found.openai_on_url.append(site)
    return found


def _guarded(site_scope: Scope, switch: str | None, routes: _Routes) -> bool:
    """An Ollama construction in a function that branches on the switch, beside a vLLM-URL model."""
    return switch is not None and bool(routes.openai_on_url) and any(
        isinstance(n, (ast.If, ast.IfExp, ast.Match, ast.Compare)) and _refers(getattr(n, "test", n), switch)
        for n in ast.walk(site_scope.node))


def _without_default(module: PyModule, settings: SettingsInfo, names: list[str]) -> list[str]:
    if not settings.style.startswith("pydantic"):
        return []
    lines = {settings.fields[n].line for n in names if n in settings.fields}
    return [n.target.id for n in ast.walk(module.tree) if isinstance(n, ast.AnnAssign) and n.lineno in lines
            and n.value is None and isinstance(n.target, ast.Name)]


def switch_status(src: Source) -> SwitchStatus:
    """Does the backend read LLM_BACKEND/VLLM_BASE_URL/VLLM_MODEL (each with a default, so it still starts
    without them), and is every Ollama model it builds chosen by LLM_BACKEND — through select_llm, or in a
    function that branches on the switch setting, beside a streamed ChatOpenAI(base_url=<the VLLM_BASE_URL
    setting>)?"""
    problems: list[str] = []
    settings = src.settings
    if settings is None:
        return SwitchStatus(False, False, ["no settings holding the Ollama URL found in backend.config_module"], {})
    fields = fields_for(settings)
    missing = [env for env in ENV_NAMES if env not in fields]
    if missing:
        problems.append(f"{settings.file} reads no {', '.join(missing)}"
                        + (f" (its fields are read as {settings.env_prefix}…)" if settings.env_prefix else ""))
    module = next(m for m in src.index.modules.values() if m.rel == settings.file)
    required = _without_default(module, settings, list(fields.values()))
    if required:
        problems.append(f"{settings.file}: {', '.join(required)} {'has' if len(required) == 1 else 'have'} no "
                        "default: give each one (LLM_BACKEND's: \"ollama\") so the backend starts without them")
    switch, url = fields.get("LLM_BACKEND"), fields.get("VLLM_BASE_URL")
    routes = _routes(src, switch, url)
    unrouted = [ev(site.file, site.line) for site, _call, scope in src.sites
                if not _guarded(scope, switch, routes)]
    if unrouted:
        problems.append(f"{', '.join(unrouted)}: {src.sites[0][0].cls}(…) is not chosen by LLM_BACKEND")
    not_streamed = [ev(s.file, s.line) for s in routes.openai_on_url if not s.streaming]
    if not_streamed and not routes.select_llm_calls:
        problems.append(f"{', '.join(not_streamed)}: the vLLM model is never streamed "
                        "(streaming=True, or .stream/.astream on it)")
    if not src.sites and not routes.select_llm_calls and not routes.openai_on_url:
        problems.append("no LLM construction chosen by LLM_BACKEND found")
    sites_ok = not unrouted and not (not_streamed and not routes.select_llm_calls) and bool(
        src.sites or routes.select_llm_calls or routes.openai_on_url)
    return SwitchStatus(not missing and not required, sites_ok, problems, fields)
