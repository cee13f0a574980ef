"""What `graphrag-migrate init` finds in a GraphRAG repo: pure functions over a directory.

`discover(root)` reads the repo and returns a `Discovery`: the compose stack (files, services, how env
reaches each, ports, networks, healthchecks), the services that use the LLM, the env file compose reads,
the backend's source (settings style and names, LLM call sites, an existing provider switch, dependency
file, target Python), Ollama, and the chat and health endpoints — each finding with its evidence
(`file:line`, relative to the repo root), plus what could not be decided (`undecided`) and the choices
that have more than one candidate (`choices`).

Nothing of the user's is imported or run: Python is parsed with `ast` (a line this Python cannot parse —
newer syntax — is blanked and said so), YAML with PyYAML. The one process started is `docker compose
config` (when the docker CLI with compose is there), which resolves the merged model exactly as compose
will; without it, or when it fails (an env file it needs is not there yet), the files are merged here by
compose's rules.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.files.pysource import (HERE, CallSite, Grammar, ProviderSwitch, PyIndex, Scope, SettingsInfo,
                                      _const, analyse_call_sites, choose_settings, ev, index_name, inside,
                                      interpreter_for, provider_switch, python_files, relpath,
                                      settings_candidates, tool_calling_sites, version_tuple)

# compose's own file names, in the order it prefers them
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAMES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yaml",
                  "docker-compose.override.yml")
COMPOSE_DIRS = ("", "docker")
ENV_TEMPLATES = (".env.example", ".env.template", "env.example", ".env.sample", ".env.dist")
OLLAMA_MODULES = ("langchain_ollama", "ollama", "langchain_community.chat_models", "langchain_community.llms",
                  "langchain.llms", "langchain.chat_models", "langchain_community.chat_models.ollama",
                  "langchain_community.llms.ollama")
SESSION_FIELDS = ("session_id", "conversation_id", "thread_id", "chat_id", "session")


@dataclass
class Choice:
    """More than one candidate for a migrate.yaml key: `init` stops (exit 1) unless `--yes` or `--set`."""

    key: str
    what: str
    candidates: list[tuple[str, list[str]]]  # (value, evidence)
    best: str
    why: str  # why `best` is the best guess

    def to_dict(self) -> dict:
        return {"key": self.key, "what": self.what, "best": self.best, "why": self.why,
                "candidates": [{"value": v, "evidence": e} for v, e in self.candidates],
                "set": f"--set {self.key}={self.best}"}


@dataclass
class Undecided:
    key: str
    why: str
    fix: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---- YAML with line numbers ---------------------------------------------------------------------------
def _yaml_loader():
    import yaml

    class ComposeLoader(yaml.SafeLoader):
        """SafeLoader plus compose's `!reset` and `!override` tags."""

    def _override(loader, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    ComposeLoader.add_constructor("!override", _override)
    ComposeLoader.add_constructor("!reset", lambda loader, node: None)
    return ComposeLoader


def load_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """The document, and the 1-based line of every mapping key and sequence item by its path."""
    import yaml

    text = path.read_text(encoding="utf-8")
    loader = _yaml_loader()
    data = yaml.load(text, Loader=loader)
    lines: dict[tuple, int] = {}

    def walk(node, where: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    lines[where + (key.value,)] = key.start_mark.line + 1
                    walk(value, where + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[where + (i,)] = item.start_mark.line + 1
                walk(item, where + (i,))

    walk(yaml.compose(text, Loader=loader), ())
    return data, lines


# ---- env files and interpolation ----------------------------------------------------------------------
@dataclass
class EnvValues:
    """An env file's values with the line each was set on."""

    rel: str
    values: dict[str, str]
    lines: dict[str, int]

    def evidence(self, key: str) -> str:
        return ev(self.rel, self.lines.get(key))


def read_env(path: Path, root: Path) -> EnvValues | None:
    from migrator.files.envfile import EnvFile

    try:
        data = path.read_bytes()
    except OSError:
        return None
    env = EnvFile.from_bytes(data)
    values, lines = {}, {}
    for entry in env.entries:
        values[entry.key] = entry.value
        lines[entry.key] = env.text.count("\n", 0, entry.value_start) + 1
    return EnvValues(relpath(path, root), values, lines)


_VAR_RE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR:+alt}`, `$VAR`, `$$`."""

    def repl(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        if m["named"]:
            return env.get(m["named"], "")
        parts = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:-|-|:\?|\?|:\+|\+)(.*))?$", m["braced"], re.S)
        if not parts:
            return m.group(0)
        name, op, arg = parts.group(1), parts.group(2), parts.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else interpolate(arg, env)
        if op == "-":
            return value if value is not None else interpolate(arg, env)
        if op == ":+":
            return interpolate(arg, env) if value else ""
        if op == "+":
            return interpolate(arg, env) if value is not None else ""
        return value or ""

    return _VAR_RE.sub(repl, text)


def variables_in(text: str) -> list[str]:
    """The variable names a compose value reads (`${BACKEND_PORT:-8000}` → BACKEND_PORT)."""
    out = []
    for m in _VAR_RE.finditer(text):
        name = m["named"] or (re.match(r"[A-Za-z_][A-Za-z0-9_]*", m["braced"] or "") or [None])[0]
        if name:
            out.append(name)
    return out


# ---- compose --------------------------------------------------------------------------------------------
@dataclass
class RawService:
    """One compose service as the files spell it, merged across files; paths resolved."""

    name: str
    declared: list[str] = field(default_factory=list)  # file:line of each file that declares it
    build_context: Path | None = None
    dockerfile: str | None = None
    image: str | None = None
    command: list[str] | str | None = None
    env_files: list[tuple[Path, bool, str]] = field(default_factory=list)  # (path, required, evidence)
    environment: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (value, evidence)
    ports: list[tuple[str, str, str]] = field(default_factory=list)  # (spelling as written, interpolated, evidence)
    networks: list[str] = field(default_factory=list)
    network_mode: str | None = None
    healthcheck: str | None = None
    volumes: list[tuple[str, str, str]] = field(default_factory=list)  # (source: abs path for binds, target, ev)
    labels: dict = field(default_factory=dict)
    container_name: str | None = None
    working_dir: str | None = None
    key_evidence: dict[str, str] = field(default_factory=dict)  # compose key -> file:line
    effective_env: dict[str, str | None] = field(default_factory=dict)

    def line(self, key: str) -> str:
        return self.key_evidence.get(key) or (self.declared[-1] if self.declared else "")


@dataclass
class ComposeStack:
    project_dir: Path
    files: list[str] = field(default_factory=list)  # relative to the repo root, in load order
    base_files: list[Path] = field(default_factory=list)  # what `docker compose -f` gets (includes followed by it)
    how: str = ""  # how the files were found
    services: dict[str, RawService] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)  # declared top-level networks -> evidence
    name: str | None = None
    name_evidence: str = ""
    project_env: EnvValues | None = None
    model: str = "yaml"  # "docker compose config" or "yaml (why)"
    notes: list[str] = field(default_factory=list)
    files_evidence: list[str] = field(default_factory=list)
    file_lines: dict[str, int] = field(default_factory=dict)  # the line of `services:` (or `include:`) in each


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _port_spelling(entry, env: dict) -> tuple[str, str]:
    if isinstance(entry, dict):
        published, target = entry.get("published"), entry.get("target")
        host = entry.get("host_ip")
        text = ":".join(str(p) for p in (host, published, target) if p not in (None, ""))
        if entry.get("protocol", "tcp") != "tcp":
            text += f"/{entry['protocol']}"
        return text, interpolate(text, env)
    return str(entry), interpolate(str(entry), env)


def _health_spelling(test) -> str | None:
    if test is None:
        return None
    if isinstance(test, list):
        return " ".join(str(t) for t in test[1:]) if test and test[0] in ("CMD", "CMD-SHELL") else " ".join(map(str, test))
    return str(test)


def _env_entries(environment) -> list[tuple[str, str | None, int]]:
    """(key, value or None, index) of an `environment:` list or mapping."""
    out = []
    if isinstance(environment, dict):
        for i, (k, v) in enumerate(environment.items()):
            out.append((str(k), None if v is None else str(v), k))
    elif isinstance(environment, list):
        for i, item in enumerate(environment):
            key, sep, value = str(item).partition("=")
            out.append((key, value if sep else None, i))
    return out


def _merge_service(svc: RawService, spec: dict, rel: str, lines: dict, where: tuple, base_dir: Path,
                   env: dict, root: Path) -> None:
    def at(*keys) -> str:
        return ev(rel, lines.get(where + keys))

    svc.declared.append(ev(rel, lines.get(where)))
    for key in spec:
        svc.key_evidence[key] = at(key)
    if "build" in spec:
        build = spec["build"]
        context = build.get("context", ".") if isinstance(build, dict) else build
        if context is not None:
            context = interpolate(str(context), env)
            svc.build_context = Path(os.path.normpath(base_dir / context)) if "://" not in context else None
        if isinstance(build, dict) and build.get("dockerfile"):
            svc.dockerfile = str(build["dockerfile"])
    if spec.get("image") is not None:
        svc.image = interpolate(str(spec["image"]), env)
    if "command" in spec:
        command = spec["command"]
        svc.command = [interpolate(str(c), env) for c in command] if isinstance(command, list) else (
            None if command is None else interpolate(str(command), env))
    for i, entry in enumerate(_as_list(spec.get("env_file"))):
        path, required = (entry.get("path"), entry.get("required", True)) if isinstance(entry, dict) else (entry, True)
        if path is None:
            continue
        resolved = Path(os.path.normpath(base_dir / interpolate(str(path), env)))
        if all(p != resolved for p, _, _ in svc.env_files):
            line = lines.get(where + ("env_file", i)) or lines.get(where + ("env_file",))
            svc.env_files.append((resolved, bool(required), ev(rel, line)))
    for key, value, index in _env_entries(spec.get("environment")):
        line = lines.get(where + ("environment", index)) or lines.get(where + ("environment",))
        svc.environment[key] = (value, ev(rel, line))
    for i, entry in enumerate(_as_list(spec.get("ports"))):
        spelled, resolved = _port_spelling(entry, env)
        if all(r != resolved for _, r, _ in svc.ports):
            svc.ports.append((spelled, resolved, at("ports", i)))
    if "networks" in spec:
        nets = spec["networks"]
        names = list(nets) if isinstance(nets, dict) else [str(n) for n in _as_list(nets)]
        svc.networks += [n for n in names if n not in svc.networks]
    if spec.get("network_mode"):
        svc.network_mode = str(spec["network_mode"])
    health = spec.get("healthcheck")
    if isinstance(health, dict) and "test" in health:
        svc.healthcheck = _health_spelling(health["test"])
    for i, entry in enumerate(_as_list(spec.get("volumes"))):
        if isinstance(entry, dict):
            source, target = entry.get("source"), entry.get("target")
            kind = entry.get("type", "volume")
        else:
            parts = interpolate(str(entry), env).split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
            kind = "bind" if source and (source.startswith((".", "/", "~"))) else "volume"
        if source and kind == "bind":
            source = str(Path(os.path.normpath(base_dir / os.path.expanduser(interpolate(str(source), env)))))
        svc.volumes.append((str(source) if source else "", str(target or ""), at("volumes", i)))
    if isinstance(spec.get("labels"), dict):
        svc.labels.update(spec["labels"])
    elif isinstance(spec.get("labels"), list):
        svc.labels.update(dict(str(x).partition("=")[::2] for x in spec["labels"]))
    if spec.get("container_name"):
        svc.container_name = str(spec["container_name"])
    if spec.get("working_dir"):
        svc.working_dir = interpolate(str(spec["working_dir"]), env)


def _load_compose_file(stack: ComposeStack, path: Path, base_dir: Path, env: dict, root: Path,
                       seen: set, depth: int = 0) -> None:
    if path in seen or depth > 8:
        return
    seen.add(path)
    rel = relpath(path, root)
    try:
        data, lines = load_yaml(path)
    except Exception as exc:  # a file compose would refuse too: said, not fatal for the rest
        stack.notes.append(f"{rel} could not be read as YAML: {str(exc).splitlines()[0]}")
        return
    stack.files.append(rel)
    if not isinstance(data, dict):
        return
    stack.file_lines[rel] = lines.get(("services",)) or lines.get(("include",)) or 1
    for i, entry in enumerate(_as_list(data.get("include"))):
        if isinstance(entry, dict):
            paths = _as_list(entry.get("path"))
            project_directory = entry.get("project_directory")
        else:
            paths, project_directory = [entry], None
        for p in paths:
            included = Path(os.path.normpath(path.parent / interpolate(str(p), env)))
            inc_base = Path(os.path.normpath(path.parent / project_directory)) if project_directory else included.parent
            if included.is_file():
                _load_compose_file(stack, included, inc_base, env, root, seen, depth + 1)
            else:
                stack.notes.append(f"{ev(rel, lines.get(('include', i)))} includes {p}, which is not there")
    if data.get("name") and stack.name is None:
        stack.name = interpolate(str(data["name"]), env)
        stack.name_evidence = ev(rel, lines.get(("name",)))
    for net in (data.get("networks") or {}) if isinstance(data.get("networks"), dict) else {}:
        stack.networks.setdefault(str(net), ev(rel, lines.get(("networks", net))))
    services = data.get("services") or {}
    if isinstance(services, dict):
        for name, spec in services.items():
            if spec is not None and not isinstance(spec, dict):
                stack.notes.append(f"{ev(rel, lines.get(('services', name)))}: service {name} is not a mapping")
                continue
            svc = stack.services.setdefault(str(name), RawService(str(name)))
            try:
                _merge_service(svc, spec or {}, rel, lines, ("services", name), base_dir, env, root)
            except (AttributeError, TypeError, ValueError) as exc:  # a shape compose would refuse too
                stack.notes.append(f"{ev(rel, lines.get(('services', name)))}: service {name} not understood ({exc})")


def compose_candidates(root: Path) -> list[tuple[Path, list[str]]]:
    """(directory, compose file names there in compose's order) for the repo root and docker/."""
    out = []
    for sub in COMPOSE_DIRS:
        directory = root / sub if sub else root
        names = [n for n in COMPOSE_NAMES if (directory / n).is_file()]
        if names:
            out.append((directory, names))
    return out


def load_stack(root: Path, directory: Path, names: list[str], use_compose: bool = True) -> ComposeStack:
    """The stack compose would load from `directory`: COMPOSE_FILE from its .env, else the default file and
    its override; include: followed; then the merged model from `docker compose config` when it works."""
    stack = ComposeStack(project_dir=directory)
    stack.project_env = read_env(directory / ".env", root)
    env = dict(stack.project_env.values) if stack.project_env else {}
    compose_file = env.get("COMPOSE_FILE")
    if compose_file:
        separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        files = [directory / f for f in compose_file.split(separator) if f]
        stack.how = f"COMPOSE_FILE in {stack.project_env.evidence('COMPOSE_FILE')}"
        stack.files_evidence.append(stack.project_env.evidence("COMPOSE_FILE"))
    else:
        files = [directory / names[0]]
        stack.how = f"compose's default file in {relpath(directory, root)}/"
        if len(names) > 1:
            stack.notes.append(f"{relpath(directory, root)}/ has {', '.join(names)}: compose reads {names[0]}")
        override = next((directory / o for o in OVERRIDE_NAMES if (directory / o).is_file()), None)
        if override is not None:
            files.append(override)
    seen: set = set()
    for f in files:
        if f.is_file():
            stack.base_files.append(f)
            _load_compose_file(stack, f, directory, env, root, seen)
        else:
            stack.notes.append(f"{relpath(f, root)} is named by COMPOSE_FILE but is not there")
    if stack.name is None and env.get("COMPOSE_PROJECT_NAME"):
        stack.name = env["COMPOSE_PROJECT_NAME"]
        stack.name_evidence = stack.project_env.evidence("COMPOSE_PROJECT_NAME")
    for svc in stack.services.values():
        _own_effective_env(svc, env, root)
    if use_compose:
        _compose_config(stack, root)
    else:
        stack.model = "yaml (docker compose not used)"
    return stack


def _own_effective_env(svc: RawService, project_env: dict, root: Path) -> None:
    values: dict[str, str | None] = {}
    for path, _required, _ev in svc.env_files:
        found = read_env(path, root)
        if found:
            values.update(found.values)
    for key, (value, _e) in svc.environment.items():
        values[key] = interpolate(value, project_env) if value is not None else project_env.get(key, values.get(key))
    svc.effective_env = values


def _compose_runner(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def _compose_config(stack: ComposeStack, root: Path) -> None:
    """Overlay what `docker compose config --format json` resolves: the service set, build contexts, images,
    commands, networks, ports, healthchecks and each service's effective environment."""
    import shutil

    if not stack.base_files:
        stack.model = "yaml (no compose file)"
        return
    if not shutil.which("docker"):
        stack.model = "yaml (no docker CLI here)"
        return
    cmd = ["docker", "compose", "--project-directory", str(stack.project_dir)]
    for f in stack.base_files:
        cmd += ["-f", str(f)]
    if stack.project_env is not None:
        cmd += ["--env-file", str(stack.project_dir / ".env")]
    try:
        proc = _compose_runner([*cmd, "config", "--format", "json"], stack.project_dir)
    except (OSError, subprocess.SubprocessError) as exc:
        stack.model = f"yaml (docker compose config could not run: {exc})"
        return
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        if "docker: 'compose' is not a docker command" in proc.stderr or "unknown command" in proc.stderr:
            stack.model = "yaml (no compose plugin for the docker CLI)"
        elif "env file" in first and "not found" in first:
            stack.model = f"yaml (docker compose config: {first.replace(str(root) + os.sep, '')})"
        else:
            stack.model = f"yaml (docker compose config failed: {first.replace(str(root) + os.sep, '')})"
        return
    try:
        model = json.loads(proc.stdout)
    except ValueError:
        stack.model = "yaml (docker compose config printed no JSON)"
        return
    stack.model = "docker compose config"
    for name, spec in (model.get("services") or {}).items():
        svc = stack.services.setdefault(name, RawService(name))
        build = spec.get("build")
        if isinstance(build, dict) and build.get("context"):
            context = build["context"]
            svc.build_context = Path(context) if "://" not in context else None
        if spec.get("image"):
            svc.image = spec["image"]
        if spec.get("command") is not None:
            svc.command = spec["command"]
        svc.networks = list(spec.get("networks") or {})
        svc.network_mode = spec.get("network_mode")
        resolved = []
        for entry in spec.get("ports") or []:
            spelled = _port_spelling({k: entry.get(k) for k in ("host_ip", "published", "target", "protocol")}, {})[0]
            old = next((e for s, r, e in svc.ports if r == spelled), svc.line("ports"))
            resolved.append((spelled, spelled, old))
        svc.ports = resolved
        health = spec.get("healthcheck") or {}
        if "test" in health:
            svc.healthcheck = _health_spelling(health["test"])
        svc.effective_env = dict(spec.get("environment") or {})
        volumes = []
        for v in spec.get("volumes") or []:
            old = next((e for s, t, e in svc.volumes if t == v.get("target")), svc.line("volumes"))
            volumes.append((str(v.get("source") or ""), str(v.get("target") or ""), old))
        svc.volumes = volumes


def published(port: str) -> tuple[str | None, str | None, str]:
    """'127.0.0.1:11435:11434' → ('127.0.0.1', '11435', '11434'); '8000' → (None, None, '8000')."""
    text = port.split("/")[0]
    if text.startswith("["):  # [::1]:8000:8000
        host, _, rest = text[1:].partition("]:")
        pub, _, target = rest.partition(":")
        return host, pub, target
    parts = text.split(":")
    if len(parts) == 1:
        return None, None, parts[0]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


# ---- HTTP endpoints (FastAPI / Starlette) -------------------------------------------------------------
ROUTE_METHODS = {"get", "post", "put", "patch", "delete", "api_route", "route"}
STREAM_RESPONSES = {"StreamingResponse", "EventSourceResponse"}


@dataclass
class Route:
    path: str
    method: str
    file: str
    line: int
    handler: str
    streaming: bool
    module: str
    message_field: str | None = None
    message_line: str = ""
    session_field: str | None = None
    session_line: str = ""
    llm_field: str | None = None
    params: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": self.path, "method": self.method, "streaming": self.streaming,
                "message_field": self.message_field}


@dataclass
class AppObject:
    key: tuple  # ("var", scope key, name)
    kind: str  # FastAPI | Starlette | APIRouter
    prefix: str
    file: str
    line: int
    module: str
    name: str


def apps_and_routers(index: PyIndex) -> dict[tuple, AppObject]:
    found = {}
    for module in index.modules.values():
        for node in module.tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                kind = index_name(node.value.func)
                if kind in ("FastAPI", "Starlette", "APIRouter"):
                    prefix = next((_const(k.value) for k in node.value.keywords if k.arg == "prefix"), "") or ""
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            key = ("var", module.scope.key, t.id)
                            found[key] = AppObject(key, kind, str(prefix), module.rel, node.lineno, module.name, t.id)
    return found


def _body_model_fields(index: PyIndex, annotation: ast.AST, scope: Scope) -> tuple[list[tuple[str, str, int]], str]:
    """(field, annotation text, line) of a pydantic body model named by a parameter's annotation."""
    r = index.ref(annotation, scope) if isinstance(annotation, (ast.Name, ast.Attribute)) else None
    if r is None or r[0] != "class":
        return [], ""
    cls_scope = index.scope_of(r[1])
    if cls_scope is None:
        return [], ""
    node = cls_scope.node
    if not any(index_name(b) in ("BaseModel", "SQLModel") or index.ref(b, cls_scope.parent) is not None
               for b in node.bases):
        return [], ""
    fields = [(i.target.id, ast.unparse(i.annotation), i.lineno) for i in node.body
              if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)]
    return fields, cls_scope.module.rel


def _is_str(annotation: str) -> bool:
    return bool(re.fullmatch(r"(Optional\[)?str(\])?( \| None)?|Annotated\[str,.*\]|constr\(.*\)", annotation))


def _handler_details(index: PyIndex, fn: ast.AST, scope: Scope, route: Route) -> None:
    fn_scope = next((s for s in scope.module.scopes if s.node is fn), None)
    if fn_scope is None:
        return
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    defaults = dict(zip([a.arg for a in (fn.args.posonlyargs + fn.args.args)][-len(fn.args.defaults):],
                        fn.args.defaults)) if fn.args.defaults else {}
    defaults.update({a.arg: d for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None})
    route.params = [a.arg for a in args]
    request_names = []
    for a in args:
        default = defaults.get(a.arg)
        if isinstance(default, ast.Call) and index_name(default.func) == "Depends":
            continue
        if a.annotation is None:
            continue
        ann = ast.unparse(a.annotation)
        if ann in ("Request", "starlette.requests.Request", "fastapi.Request"):
            request_names.append(a.arg)
            continue
        fields, rel = _body_model_fields(index, a.annotation, fn_scope.parent or scope)
        if fields:
            first = next((f for f in fields if _is_str(f[1])), fields[0])
            route.message_field, route.message_line = first[0], ev(rel, first[2])
            session = next((f for f in fields if f[0] in SESSION_FIELDS), None)
            if session:
                route.session_field, route.session_line = session[0], ev(rel, session[2])
            return
        if _is_str(ann) and isinstance(default, ast.Call) and index_name(default.func) == "Body" \
                and route.message_field is None:
            route.message_field, route.message_line = a.arg, ev(scope.module.rel, a.lineno)
    if request_names:  # the field read from the request's JSON
        json_vars = set()
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Await) \
                    and isinstance(node.value.value, ast.Call) and isinstance(node.value.value.func, ast.Attribute) \
                    and node.value.value.func.attr == "json":
                json_vars |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in sorted((n for n in ast.walk(fn) if hasattr(n, "lineno")), key=lambda n: (n.lineno, n.col_offset)):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in json_vars:
                key = _const(node.slice)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in json_vars and node.args:
                key = _const(node.args[0])
            if isinstance(key, str):
                if route.message_field is None and key not in SESSION_FIELDS:
                    route.message_field, route.message_line = key, ev(scope.module.rel, node.lineno)
                elif key in SESSION_FIELDS and route.session_field is None:
                    route.session_field, route.session_line = key, ev(scope.module.rel, node.lineno)


def _returns_stream(fn: ast.AST, decorator: ast.Call) -> bool:
    if any(k.arg == "response_class" and index_name(k.value) in STREAM_RESPONSES for k in decorator.keywords):
        return True
    return any(isinstance(n, ast.Call) and index_name(n.func) in STREAM_RESPONSES for n in ast.walk(fn))


def _health_field(fn: ast.AST) -> str | None:
    for node in ast.walk(fn):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            for k in node.value.keys:
                key = _const(k)
                if isinstance(key, str) and re.search(r"llm|provider|backend", key, re.I):
                    return key
    return None


def routes(index: PyIndex) -> list[Route]:
    apps = apps_and_routers(index)
    # prefixes added by include_router(router, prefix=…): router key -> [prefix from its parent]
    included: dict[tuple, list[tuple[tuple, str]]] = {}
    for module in index.modules.values():
        for scope in module.scopes:
            for node in scope.own_nodes():
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "include_router" and node.args:
                    parent = index.ref(node.func.value, scope)
                    child = index.ref(node.args[0], scope)
                    prefix = next((_const(k.value) for k in node.keywords if k.arg == "prefix"), "") or ""
                    if child is not None:
                        included.setdefault(child, []).append((parent, str(prefix)))

    def full_prefix(key: tuple, depth: int = 0) -> str:
        own = apps[key].prefix if key in apps else ""
        if depth > 5 or key not in included:
            return own
        parent, prefix = included[key][0]
        return full_prefix(parent, depth + 1) + prefix + own if parent is not None else prefix + own

    out = []
    for module in index.modules.values():
        for scope in module.scopes:
            for node in scope.own_nodes():
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for deco in node.decorator_list:
                    if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                            and deco.func.attr in ROUTE_METHODS and deco.args
                            and isinstance(_const(deco.args[0]), str)):
                        continue
                    owner = index.ref(deco.func.value, scope)
                    if owner not in apps and not str(_const(deco.args[0])).startswith("/"):
                        continue
                    methods = [deco.func.attr.upper()]
                    if deco.func.attr in ("api_route", "route"):
                        listed = next((k.value for k in deco.keywords if k.arg == "methods"), None)
                        methods = ([str(_const(e)).upper() for e in listed.elts] if isinstance(listed, ast.List)
                                   else ["GET"])
                    path = (full_prefix(owner) if owner is not None else "") + _const(deco.args[0])
                    for method in methods:
                        route = Route(path or "/", method, module.rel, deco.lineno, node.name,
                                      _returns_stream(node, deco), module.name)
                        _handler_details(index, node, scope, route)
                        route.llm_field = _health_field(node)
                        out.append(route)
    return sorted(out, key=lambda r: (r.file, r.line))


_CHATTY = re.compile(r"chat|ask|query|question|message|complet|answer|generate|conversation|rag", re.I)


def chat_endpoint(all_routes: list[Route]) -> tuple[Route | None, list[Route]]:
    """The streaming chat endpoint (or the chat-like POST when none streams), and its equals."""
    posts = [r for r in all_routes if r.method == "POST"]

    def rank(r: Route) -> tuple:
        return (not r.streaming, not _CHATTY.search(r.path), r.message_field is None)

    posts.sort(key=rank)
    if not posts:
        return None, []
    best = posts[0]
    if rank(best)[1] and not best.streaming:  # neither streams nor looks like chat
        return None, []
    ties = [r for r in posts[1:] if rank(r) == rank(best)]
    return best, ties


def health_endpoint(all_routes: list[Route]) -> Route | None:
    gets = [r for r in all_routes if r.method == "GET" and re.search(r"health", r.path.rsplit("/", 1)[-1], re.I)]
    gets.sort(key=lambda r: (r.path != "/health", len(r.path)))
    return gets[0] if gets else None


def history_route(all_routes: list[Route]) -> Route | None:
    return next((r for r in all_routes if r.method == "GET" and "history" in r.path and "{" in r.path), None)


# ---- entry points, Dockerfile, target Python, dependency file ---------------------------------------
@dataclass
class Entry:
    kind: str | None = None  # asgi (uvicorn & co.), module (python -m), script (python x.py)
    target: str | None = None  # "pkg.main:app", "app.worker", "main.py"
    app_dir: str | None = None
    port: str | None = None
    evidence: str = ""


_SERVERS = ("uvicorn", "gunicorn", "hypercorn", "granian", "fastapi", "daphne")


def parse_command(command, evidence: str = "") -> Entry:
    if command is None:
        return Entry()
    try:
        argv = list(command) if isinstance(command, list) else shlex.split(str(command))
    except ValueError:
        return Entry()
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] == "-c":
        return parse_command(argv[2], evidence)
    entry = Entry(evidence=evidence)
    for i, arg in enumerate(argv):
        base = os.path.basename(arg)
        if base in _SERVERS or (base.startswith("python") and i + 2 < len(argv) and argv[i + 1] == "-m"
                                and argv[i + 2] in _SERVERS):
            rest = argv[i + 1:] if base in _SERVERS else argv[i + 3:]
            entry.kind = "asgi"
            j = 0
            while j < len(rest):
                a = rest[j]
                value = rest[j + 1] if j + 1 < len(rest) else None
                if a.startswith("--app-dir"):
                    entry.app_dir = a.split("=", 1)[1] if "=" in a else value
                    j += 1 if "=" in a else 2
                    continue
                if a.startswith("--port"):
                    entry.port = a.split("=", 1)[1] if "=" in a else value
                    j += 1 if "=" in a else 2
                    continue
                if a in ("-b", "--bind") and value:
                    entry.port = value.rsplit(":", 1)[-1]
                    j += 2
                    continue
                if re.fullmatch(r"[\w.]+:[\w.]+(\(\))?", a) and entry.target is None:
                    entry.target = a
                elif base == "fastapi" and a.endswith(".py") and entry.target is None:
                    entry.target = a
                j += 1
            return entry
        if base.startswith("python") and i + 2 <= len(argv) - 1 and argv[i + 1] == "-m":
            return Entry("module", argv[i + 2], evidence=evidence)
        if base.startswith("python") and i + 1 < len(argv) and argv[i + 1].endswith(".py"):
            return Entry("script", argv[i + 1], evidence=evidence)
    return Entry()


@dataclass
class Dockerfile:
    rel: str
    python: str | None = None
    python_line: int | None = None
    command: list[str] | str | None = None
    command_line: int | None = None
    text: str = ""


def read_dockerfile(path: Path, root: Path) -> Dockerfile | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    out = Dockerfile(relpath(path, root), text=text)
    logical, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if not logical:
            start = n
        logical += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if line.rstrip().endswith("\\"):
            continue
        instruction, _, args = logical.partition(" ")
        logical = ""
        instruction = instruction.upper()
        if instruction == "FROM":
            m = re.search(r"(?:^|/)python:(\d+)\.(\d+)", args)
            if m:
                out.python, out.python_line = f"{m.group(1)}.{m.group(2)}", start
        elif instruction in ("CMD", "ENTRYPOINT"):
            try:
                value = json.loads(args) if args.strip().startswith("[") else args
            except ValueError:
                value = args
            if instruction == "CMD" or out.command is None:
                out.command, out.command_line = value, start
    return out


def _lower_bound(spec: str) -> str | None:
    bounds = []
    for part in spec.split(","):
        m = re.match(r"\s*(>=|==|~=|\^|~|>|<=|<|!=)?\s*(\d+)\.(\d+)", part)
        if m and m.group(1) not in ("<", "<=", "!="):
            minor = int(m.group(3)) + (1 if m.group(1) == ">" else 0)
            bounds.append((int(m.group(2)), minor))
    return f"{min(bounds)[0]}.{min(bounds)[1]}" if bounds else None


def _line_of(path: Path, pattern: str) -> int | None:
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line):
                return n
    except (OSError, UnicodeDecodeError):
        pass
    return None


def _upwards(start: Path, root: Path) -> list[Path]:
    out, d = [], Path(os.path.abspath(start))
    stop = Path(os.path.abspath(root))
    while True:
        out.append(d)
        if d == stop or d == d.parent or not inside(d, stop):
            break
        d = d.parent
    return out


def _pyproject(path: Path) -> dict | None:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def python_target(root: Path, backend: Path, dockerfile: Dockerfile | None) -> tuple[str, str, str]:
    """(version, source, evidence): requires-python (PEP 621 or Poetry), Dockerfile FROM python:X,
    .python-version, else this machine's."""
    for d in _upwards(backend, root):
        data = _pyproject(d / "pyproject.toml")
        if data is None:
            continue
        spec = (data.get("project") or {}).get("requires-python")
        pattern = r"requires-python"
        if spec is None:
            poetry = ((data.get("tool") or {}).get("poetry") or {}).get("dependencies") or {}
            spec = poetry.get("python")
            spec = spec.get("version") if isinstance(spec, dict) else spec
            pattern = r"^\s*python\s*="
        version = _lower_bound(str(spec)) if spec else None
        if version:
            return version, "requires-python", ev(relpath(d / "pyproject.toml", root), _line_of(d / "pyproject.toml", pattern))
    if dockerfile is not None and dockerfile.python:
        return dockerfile.python, "Dockerfile", ev(dockerfile.rel, dockerfile.python_line)
    for d in _upwards(backend, root):
        pv = d / ".python-version"
        if pv.is_file():
            m = re.match(r"\s*(\d+)\.(\d+)", pv.read_text(encoding="utf-8"))
            if m:
                return f"{m.group(1)}.{m.group(2)}", ".python-version", ev(relpath(pv, root), 1)
    return f"{sys.version_info.major}.{sys.version_info.minor}", "default", "this machine's Python"


def dependency_file(root: Path, backend: Path, dockerfile: Dockerfile | None) -> tuple[dict | None, str, list[str]]:
    """({path, kind}, evidence, other candidates) — in the backend's directory, else the nearest above it."""
    for d in _upwards(backend, root):
        found = []
        for req in sorted(d.glob("requirements*.txt")):
            found.append((req, "requirements"))
        data = _pyproject(d / "pyproject.toml")
        if data is not None:
            if "dependencies" in (data.get("project") or {}):
                found.append((d / "pyproject.toml", "pep621"))
            elif "dependencies" in ((data.get("tool") or {}).get("poetry") or {}):
                found.append((d / "pyproject.toml", "poetry"))
        if (d / "Pipfile").is_file():
            found.append((d / "Pipfile", "pipfile"))
        if not found:
            continue

        def rank(item):
            path, kind = item
            text = path.read_text(encoding="utf-8", errors="replace").lower()
            named = dockerfile is not None and path.name in dockerfile.text
            return (not named, "ollama" not in text and "langchain" not in text,
                    path.name != "requirements.txt" and kind == "requirements", str(path))

        found.sort(key=rank)
        path, kind = found[0]
        line = _line_of(path, r"(?i)langchain[-_]ollama|ollama") or 1
        return ({"path": relpath(path, root), "kind": kind}, ev(relpath(path, root), line),
                [relpath(p, root) for p, _ in found[1:]])
    return None, "", []


# ---- the discovery ------------------------------------------------------------------------------------
@dataclass
class Discovery:
    root: Path
    compose_files: list[str] = field(default_factory=list)
    compose_project_dir: str | None = None
    compose_model: str = ""
    llm_services: list[str] = field(default_factory=list)
    services: dict[str, dict] = field(default_factory=dict)
    env_file: str | None = None
    env_template: str | None = None
    backend: dict = field(default_factory=lambda: {"dir": None, "import_root": None, "app": None,
                                                   "python": None, "python_source": None})
    settings: SettingsInfo | None = None
    llm_call_sites: list[CallSite] = field(default_factory=list)
    provider_switch: ProviderSwitch | None = None
    tool_calls: list[str] = field(default_factory=list)  # `file:line what`: bind_tools, with_structured_output, tools=
    dependency_file: dict | None = None
    ollama: dict = field(default_factory=lambda: {"service": None, "published_port": None})
    chat_endpoint: Route | None = None
    health: dict = field(default_factory=lambda: {"path": None, "llm_field": None})
    existing_vllm_service: bool = False
    runs_here: bool = True
    target_python: str = ""  # an interpreter of the target version found here (not in to_dict: machine-specific)
    # for mapping onto migrate.yaml
    backend_service: str | None = None
    stack: ComposeStack | None = None
    routes: list[Route] = field(default_factory=list)
    history: Route | None = None
    ollama_url: str | None = None
    ollama_host_ip: str | None = None
    ollama_model: str | None = None
    evidence: dict[str, list[str]] = field(default_factory=dict)
    choices: list[Choice] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the migration should know (informational)

    def add(self, key: str, *evidence: str) -> None:
        self.evidence.setdefault(key, []).extend(e for e in evidence if e and e not in self.evidence.get(key, []))

    def to_dict(self) -> dict:
        """The expected.yaml schema (tests/projects/*/expected.yaml), plus evidence and notes."""
        return {
            "compose_files": self.compose_files, "compose_project_dir": self.compose_project_dir,
            "compose_model": self.compose_model,
            "llm_services": self.llm_services, "services": self.services,
            "env_file": self.env_file, "env_template": self.env_template,
            "backend": self.backend, "runs_here": self.runs_here,
            "settings": self.settings.to_dict() if self.settings else None,
            "settings_env": ({"ollama_url": self.settings.env_of(self.settings.ollama_url_name),
                              "ollama_model": self.settings.env_of(self.settings.ollama_model_name)}
                             if self.settings else None),
            "llm_call_sites": [s.to_dict() for s in self.llm_call_sites],
            "provider_switch": self.provider_switch.to_dict() if self.provider_switch else None,
            "tool_calls": self.tool_calls,
            "dependency_file": self.dependency_file,
            "ollama": self.ollama,
            "chat_endpoint": self.chat_endpoint.to_dict() if self.chat_endpoint else None,
            "health": self.health,
            "existing_vllm_service": self.existing_vllm_service,
            "evidence": self.evidence, "notes": self.notes,
        }


def _is_ollama_service(name: str, svc: RawService) -> bool:
    return name == "ollama" or bool(svc.image and re.search(r"(^|/)ollama/ollama([:@]|$)", svc.image))


def managed(svc: RawService) -> bool:
    """graphrag-migrate's own service (phase3's docker-compose.vllm.yml, or --inline)."""
    return any("graphrag-migrate" in str(k) for k in svc.labels)


def _is_vllm_service(name: str, svc: RawService) -> bool:
    return not managed(svc) and (name == "vllm" or bool(svc.image and re.search(r"(^|/)vllm[-/]|vllm-openai", svc.image)))


def _has_python(d: Path) -> bool:
    return d.is_dir() and next(python_files(d), None) is not None


def _source_dir(svc: RawService, root: Path) -> tuple[Path | None, str]:
    """The host directory holding the service's Python: its build context, or a bind-mounted directory."""
    if svc.build_context is not None and inside(svc.build_context, root) and _has_python(svc.build_context):
        return svc.build_context, svc.line("build")
    binds = [(Path(s), t, e) for s, t, e in svc.volumes if s.startswith("/") and inside(Path(s), root)
             and _has_python(Path(s))]
    binds.sort(key=lambda b: b[1] != svc.working_dir)
    if binds:
        return binds[0][0], binds[0][2]
    return None, ""


_OLLAMA_IMPORT = re.compile(r"^[ \t]*(from\s+(langchain_ollama|ollama)\b[\w.]*\s+import|import\s+(langchain_ollama|ollama)\b"
                            r"|from\s+langchain(_community)?\.(chat_models|llms)[\w.]*\s+import\s+.*\b(ChatOllama|Ollama)\b)",
                            re.M)


def _ollama_import(source: Path, root: Path, cache: dict) -> str | None:
    if source in cache:
        return cache[source]
    found = None
    for path in sorted(python_files(source)):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        m = _OLLAMA_IMPORT.search(text)
        if m:
            found = ev(relpath(path, root), text.count("\n", 0, m.start()) + 1)
            break
    cache[source] = found
    return found


def discover(root: Path, use_compose: bool = True, chosen: dict | None = None) -> Discovery:
    """Everything `init` reads from the repo at `root` (see the module doc). `chosen` settles a choice
    before it is made: {"project.compose_file": "docker/docker-compose.yml", "project.backend_service": "api"}."""
    root = Path(os.path.abspath(root))
    chosen = chosen or {}
    d = Discovery(root)
    candidates = compose_candidates(root)
    if chosen.get("project.compose_file"):
        path = Path(os.path.normpath(root / chosen["project.compose_file"]))
        if path.is_file():
            candidates = [(path.parent, [path.name])]
    stacks = [load_stack(root, directory, names, use_compose) for directory, names in candidates]
    import_cache: dict = {}

    def llm_services_of(stack: ComposeStack) -> list[tuple[str, Path | None, list[str]]]:
        out = []
        for name, svc in stack.services.items():
            if _is_ollama_service(name, svc) or _is_vllm_service(name, svc):
                continue
            source, source_ev = _source_dir(svc, root)
            why = []
            if source is not None:
                imported = _ollama_import(source, root, import_cache)
                if imported:
                    why += [source_ev, imported]
            keys = [k for k in svc.environment if k.upper().startswith("OLLAMA_")]
            if keys:
                why.append(svc.environment[keys[0]][1])
            elif not why and any(str(k).upper().startswith("OLLAMA_") for k in svc.effective_env):
                key = next(str(k) for k in svc.effective_env if str(k).upper().startswith("OLLAMA_"))
                for path, _req, e in svc.env_files:
                    found = read_env(path, root)
                    if found and key in found.values:
                        why.append(found.evidence(key))
                        break
            if why:
                out.append((name, source, why))
        return out

    stack = None
    if stacks:
        scored = [(len(llm_services_of(s)), s) for s in stacks]
        using = [s for n, s in scored if n] or stacks
        best = max(using, key=lambda s: (len(llm_services_of(s)), s.project_dir != root))
        if len(using) > 1:
            d.choices.append(Choice(
                "project.compose_file", "compose stacks in two places, each with a service that uses Ollama"
                if scored[0][0] else "compose stacks in two places, neither with a service that uses Ollama",
                [(relpath(s.base_files[0], root) if s.base_files else relpath(s.project_dir, root),
                  s.files_evidence or [ev(s.files[0], s.file_lines.get(s.files[0], 1))] if s.files else [])
                 for s in using],
                relpath(best.base_files[0], root) if best.base_files else "",
                "the tool's default place (docker/)" if best.project_dir != root else "the one with more LLM services"))
        for other in stacks:
            if other is not best and other not in using and other.base_files:
                d.notes.append(f"{relpath(other.base_files[0], root)} runs no service that uses Ollama: not the stack")
        stack = best
    d.stack = stack
    if stack is None:
        d.undecided.append(Undecided("project.compose_file", "no compose file (compose.yaml, docker-compose.yml …) "
                                     "at the repo root or in docker/",
                                     "--set project.compose_file=PATH (relative to the repo root)"))
    else:
        d.compose_files = list(stack.files)
        d.compose_project_dir = relpath(stack.project_dir, root)
        d.compose_model = stack.model
        d.add("compose_files", *(stack.files_evidence or [ev(f, stack.file_lines.get(f, 1)) for f in stack.files[:1]]))
        d.notes += stack.notes

    llm = llm_services_of(stack) if stack else []
    d.llm_services = [name for name, _, _ in llm]
    for name, _source, why in llm:
        d.add(f"llm_services.{name}", *why)
    sources = {name: source for name, source, _ in llm}
    for name in d.llm_services:
        svc = stack.services[name]
        delivery = {(True, False): "env_file", (False, True): "environment", (True, True): "both"}.get(
            (bool(svc.env_files), bool(svc.environment)))
        d.services[name] = {
            "build_context": relpath(svc.build_context, root) if svc.build_context is not None else None,
            "networks": svc.networks or ([] if svc.network_mode else ["default"]),
            "env_delivery": delivery,
            "env_keys_from_compose": list(svc.environment),
            "ports": [resolved for _s, resolved, _e in svc.ports],
            "healthcheck": svc.healthcheck,
        }
        if svc.network_mode:
            d.services[name]["network_mode"] = svc.network_mode
        d.add(f"services.{name}", *svc.declared)
        d.add(f"services.{name}.env_delivery", *[e for _p, _r, e in svc.env_files],
              *[e for _v, e in list(svc.environment.values())[:1]])

    # the Python of each LLM service; the backend is the one serving the chat endpoint
    indexes: dict[Path, PyIndex] = {}
    for name, source, _ in llm:
        if source is not None and source not in indexes:
            guess = source / "src" if (source / "src").is_dir() and not (source / "src" / "__init__.py").exists() \
                else source
            indexes[source] = PyIndex(root, source, guess)
    if not llm and not stack:
        for guess in (root / "backend", root):
            if _has_python(guess) and _ollama_import(guess, root, import_cache):
                indexes[guess] = PyIndex(root, guess, guess)
                break

    entries: dict[str, Entry] = {}
    dockerfiles: dict[str, Dockerfile | None] = {}
    for name, source, _ in llm:
        svc = stack.services[name]
        dockerfile = None
        if svc.build_context is not None:
            dockerfile = read_dockerfile(svc.build_context / (svc.dockerfile or "Dockerfile"), root)
        dockerfiles[name] = dockerfile
        entry = parse_command(svc.command, svc.line("command"))
        if entry.kind is None and dockerfile is not None and dockerfile.command is not None:
            entry = parse_command(dockerfile.command, ev(dockerfile.rel, dockerfile.command_line))
        entries[name] = entry

    app_modules: dict[Path, dict[str, AppObject]] = {}
    all_routes: dict[Path, list[Route]] = {}
    for source, index in indexes.items():
        apps = apps_and_routers(index)
        app_modules[source] = {a.module: a for a in apps.values() if a.kind in ("FastAPI", "Starlette")}
        all_routes[source] = routes(index)

    def serves_chat(name: str) -> bool | None:
        entry, source = entries.get(name, Entry()), sources.get(name)
        if source is None or not all_routes.get(source):
            return False
        if entry.kind is None:
            return None
        if entry.kind != "asgi" or not entry.target:
            return False
        module = entry.target.split(":")[0]
        if module.endswith(".py"):
            module = module[:-3].replace("/", ".")
        mods = app_modules.get(source, {})
        return any(m == module or m.endswith("." + module) or module.endswith("." + m) for m in mods)

    if d.llm_services:
        yes = [n for n in d.llm_services if serves_chat(n)]
        maybe = [n for n in d.llm_services if serves_chat(n) is None]
        pool = yes or maybe or d.llm_services
        best = next((n for n in pool if n in ("backend", "api", "app", "server", "web")), pool[0])
        if chosen.get("project.backend_service") in d.llm_services:
            pool = [best := chosen["project.backend_service"]]
        if len(pool) > 1:
            d.choices.append(Choice("project.backend_service", "several services could be the backend",
                                    [(n, d.evidence.get(f"llm_services.{n}", [])) for n in pool], best,
                                    "named like a backend" if best != pool[0] else "the first declared"))
        d.backend_service = best
        d.add("backend_service", *stack.services[best].declared[:1])
        if entries.get(best) and entries[best].evidence:
            d.add("backend_service", entries[best].evidence)
    elif stack is not None:
        d.undecided.append(Undecided(
            "project.backend_service", "no compose service builds or mounts Python that imports Ollama's client "
            "(langchain_ollama, ollama) or passes OLLAMA_* variables",
            "--set project.backend_service=NAME"))

    source = sources.get(d.backend_service) if d.backend_service else (next(iter(indexes), None))
    index = indexes.get(source) if source is not None else None
    entry = entries.get(d.backend_service, Entry()) if d.backend_service else Entry()
    if source is not None and index is not None:
        apps = app_modules.get(source, {})
        app = entry.target if entry.kind == "asgi" and entry.target else None
        if app is None and apps:
            first = sorted(apps.values(), key=lambda a: (a.file, a.line))[0]
            app = f"{first.module}:{first.name}"
            d.add("backend.app", ev(first.file, first.line))
        elif app:
            d.add("backend.app", entry.evidence)
        import_root = index.import_root
        if entry.app_dir:
            import_root = Path(os.path.normpath(source / entry.app_dir))
        elif app and ":" in app:
            module_path = app.split(":")[0].replace(".", "/")
            for cand in (source, source / "src", index.import_root):
                if (cand / f"{module_path}.py").is_file() or (cand / module_path / "__init__.py").is_file():
                    import_root = cand
                    break
        if import_root != index.import_root:
            index = indexes[source] = PyIndex(root, source, import_root)
        d.backend.update(dir=relpath(source, root), import_root=relpath(import_root, root), app=app)
        d.add("backend.dir", *(e for n, s, w in llm if n == d.backend_service for e in w[:1]))
        python, python_source, python_ev = python_target(root, source, dockerfiles.get(d.backend_service))
        d.backend.update(python=python, python_source=python_source)
        d.add("backend.python", python_ev)
        if python_source != "default" and (version_tuple(python) or (0,)) > version_tuple(HERE):
            d.target_python = interpreter_for(python) or ""
        dep, dep_ev, others = dependency_file(root, source, dockerfiles.get(d.backend_service))
        d.dependency_file = dep
        if dep:
            d.add("dependency_file", dep_ev)
            if others:
                d.notes.append(f"dependency file: {dep['path']} ({dep_ev}); also there: {', '.join(others)}")

    # LLM call sites: every LLM service's source
    sites: list[CallSite] = []
    for idx in indexes.values():
        sites += analyse_call_sites(idx)
    d.llm_call_sites = sorted({(s.file, s.line): s for s in sites}.values(), key=lambda s: (s.file, s.line))
    for s in d.llm_call_sites:
        d.add(f"llm_call_sites.{s.file}:{s.line}", ev(s.file, s.line), s.why_streaming)
    if d.backend["dir"]:  # what vLLM must be started with (vllm.tool_calling: auto reads the same)
        prefix = "" if d.backend["dir"] == "." else d.backend["dir"] + "/"
        d.tool_calls = [prefix + site for site in tool_calling_sites(root / d.backend["dir"])]
    d.runs_here = not any(idx.blanked or idx.unparsed for idx in indexes.values())
    for idx in indexes.values():
        if idx.blanked:
            d.notes.append("does not parse on this Python "
                           f"({sys.version_info.major}.{sys.version_info.minor}); read with the line blanked: "
                           + ", ".join(idx.blanked))
        if idx.unparsed:
            d.notes.append(f"not readable as Python here: {', '.join(idx.unparsed)}")
    target = d.backend.get("python") if d.backend.get("python_source") not in (None, "default") else ""
    for idx in indexes.values():  # the project's own grammar says whether those files are valid
        d.notes += idx.judge(Grammar(target or "", d.target_python))

    if index is not None:
        candidates_ = settings_candidates(index)
        backend_sites = [s for s in d.llm_call_sites if s.kwargs and inside(root / s.file, source)]
        chosen, ties = choose_settings(candidates_, backend_sites)
        d.settings = chosen
        if chosen is not None:
            d.add("settings", ev(chosen.file, chosen.line))
            for which in ("ollama_url_name", "ollama_model_name"):
                name = getattr(chosen, which)
                if name in chosen.fields:
                    d.add(f"settings.{which}", ev(chosen.file, chosen.fields[name].line))
            if ties:
                d.choices.append(Choice("backend.config_module", "several settings classes name Ollama's URL",
                                        [(relpath(root / chosen.file, source), [ev(chosen.file, chosen.line)])]
                                        + [(relpath(root / t.rsplit(':', 1)[0], source), [t]) for t in ties],
                                        relpath(root / chosen.file, source), "named by the LLM call site"))
        llm_files = {s.file for s in d.llm_call_sites}
        d.provider_switch = provider_switch(index, chosen, candidates_, llm_files)
        if d.provider_switch:
            d.add("provider_switch", ev(d.provider_switch.file, d.provider_switch.line))
        found_routes = all_routes.get(source) if source in all_routes else routes(index)
        if source in all_routes:
            found_routes = routes(index)  # after a re-index with the right import root
        d.routes = found_routes
        chat, ties = chat_endpoint(found_routes)
        d.chat_endpoint = chat
        if chat is not None:
            d.add("chat_endpoint", ev(chat.file, chat.line))
            if chat.message_line:
                d.add("chat_endpoint.message_field", chat.message_line)
            if ties:
                d.choices.append(Choice("backend.chat_path", "several chat-like endpoints",
                                        [(r.path, [ev(r.file, r.line)]) for r in [chat, *ties]], chat.path,
                                        "the first in the source"))
        health = health_endpoint(found_routes)
        if health is not None:
            d.health = {"path": health.path, "llm_field": health.llm_field}
            d.add("health", ev(health.file, health.line))
        d.history = history_route(found_routes)

    if stack is not None:
        _ollama(d, stack, root)
        _env_file(d, stack, root)
        d.existing_vllm_service = any(_is_vllm_service(n, s) for n, s in stack.services.items())
    _notes(d)
    return d


def _ollama(d: Discovery, stack: ComposeStack, root: Path) -> None:
    """Ollama: a compose service (published → a URL on loopback), or the URL the backend is given."""
    services = [(n, s) for n, s in stack.services.items() if _is_ollama_service(n, s)]
    backend = stack.services.get(d.backend_service) if d.backend_service else None
    url_env = d.settings.env_of(d.settings.ollama_url_name) if d.settings else None
    model_env = d.settings.env_of(d.settings.ollama_model_name) if d.settings else None

    def env_value(key: str | None) -> tuple[str | None, str]:
        if backend is None or not key:
            return None, ""
        case = d.settings.case_sensitive if d.settings else True
        match = next((k for k in backend.effective_env if (k == key if case else k.upper() == key.upper())), None)
        if match is None or backend.effective_env[match] in (None, ""):
            return None, ""
        where = ""
        if match in backend.environment:
            value, where = backend.environment[match]
            if value and "$" in value and stack.project_env and \
                    any(v in stack.project_env.values for v in variables_in(value)):
                where = stack.project_env.evidence(next(v for v in variables_in(value) if v in stack.project_env.values))
        else:
            for path, _req, _e in reversed(backend.env_files):
                found = read_env(path, root)
                if found and match in found.values:
                    where = found.evidence(match)
                    break
        return str(backend.effective_env[match]), where

    if services:
        name, svc = services[0]
        d.ollama["service"] = name
        d.add("ollama.service", *svc.declared[:1])
        for _spelled, resolved, where in svc.ports:
            host, pub, target = published(resolved)
            if target.split("-")[0] == "11434" or len(svc.ports) == 1:
                if pub and pub.isdigit():
                    d.ollama["published_port"] = int(pub)
                    d.ollama_host_ip = host
                    d.ollama_url = f"http://{_loopback(host)}:{pub}"
                    d.add("ollama.published_port", where)
                    break
        if d.ollama_url is None:
            used, where = env_value(url_env)
            d.undecided.append(Undecided(
                "ollama.url",
                f"Ollama is the compose service '{name}' ({svc.declared[0] if svc.declared else ''}) and publishes no "
                f"port: the backend reaches it as {used or f'http://{name}:11434'} inside compose, but graphrag-migrate "
                f"probes Ollama from this host, where that name does not resolve and the port is not open",
                f"publish it on loopback (ports: [\"127.0.0.1:11434:11434\"] under services.{name}, e.g. in an "
                f"override file) and --set ollama.url=http://localhost:11434"))
    else:
        value, where = env_value(url_env) if url_env else (None, "")
        if value is None and backend is not None:
            for key in ("OLLAMA_BASE_URL", "OLLAMA_HOST", "OLLAMA_URL", "OLLAMA_API_BASE"):
                value, where = env_value(key)
                if value:
                    break
        if value and re.match(r"https?://", value):
            host = re.match(r"https?://([^/:]+)", value).group(1)
            port = (re.match(r"https?://[^/]+:(\d+)", value) or [None, "11434"])[1]
            if host in ("host.docker.internal", "localhost", "127.0.0.1", "0.0.0.0", "::1", "172.17.0.1"):
                d.ollama_url = f"http://localhost:{port}"
            else:
                d.ollama_url = value.rstrip("/")
            d.add("ollama.url", where)
        elif d.settings and d.settings.ollama_url_name in d.settings.fields:
            default = d.settings.fields[d.settings.ollama_url_name].default
            if isinstance(default, str) and re.match(r"https?://(localhost|127\.0\.0\.1)[:/]", default):
                d.ollama_url = re.sub(r"^(https?://)(127\.0\.0\.1)", r"\1localhost", default.rstrip("/"))
                d.add("ollama.url", ev(d.settings.file, d.settings.fields[d.settings.ollama_url_name].line))
    model, where = env_value(model_env) if model_env else (None, "")
    if model:
        d.ollama_model = model
        d.add("ollama.model", where)
    elif d.settings and d.settings.ollama_model_name in d.settings.fields:
        default = d.settings.fields[d.settings.ollama_model_name].default
        if isinstance(default, str) and default:
            d.ollama_model = default
            d.add("ollama.model", ev(d.settings.file, d.settings.fields[d.settings.ollama_model_name].line))


def _loopback(host: str | None) -> str:
    return "localhost" if host in (None, "", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1") else host


def _env_file(d: Discovery, stack: ComposeStack, root: Path) -> None:
    """The env file compose reads for the backend: its env_file, else the project's .env (interpolation);
    only a template (.env.example …) there → undecided, with the copy that fixes it."""
    backend = stack.services.get(d.backend_service) if d.backend_service else None
    wanted = [x for x in ((d.settings.env_of(d.settings.ollama_url_name), d.settings.env_of(d.settings.ollama_model_name))
                          if d.settings else ()) if x]
    missing: list[tuple[Path, str]] = []
    if backend is not None and backend.env_files:
        existing = [(p, e) for p, _r, e in backend.env_files if p.is_file()]
        missing = [(p, e) for p, r, e in backend.env_files if not p.is_file()]
        if len(existing) > 1:
            holding = [(p, e) for p, e in existing
                       if any(k.upper() in {x.upper() for x in (read_env(p, root) or EnvValues('', {}, {})).values}
                              for k in wanted)]
            pool = holding if len(holding) >= 1 else existing
            best = pool[-1]
            if len(pool) > 1:
                d.choices.append(Choice("project.env_file", f"service {d.backend_service} reads several env files",
                                        [(relpath(p, root), [e]) for p, e in pool], relpath(best[0], root),
                                        "the last one listed wins in compose"))
            existing = [best]
        if existing:
            d.env_file = relpath(existing[0][0], root)
            d.add("env_file", existing[0][1])
            return
    elif stack.project_env is not None:
        d.env_file = stack.project_env.rel
        reads = [e for _k, (v, e) in (backend.environment.items() if backend else [])
                 if v and any(n in stack.project_env.values for n in variables_in(v))]
        d.add("env_file", *reads[:1], "(the compose project's .env: compose reads it for ${...})")
        return
    places = [p.parent for p, _ in missing] + [stack.project_dir]
    wanted_path = missing[0][0] if missing else stack.project_dir / ".env"
    for place in places:
        template = next((place / t for t in ENV_TEMPLATES if (place / t).is_file()), None)
        if template is not None:
            d.env_template = relpath(template, root)
            d.add("env_template", ev(d.env_template, 1))
            why = (f"{missing[0][1]} names {relpath(wanted_path, root)}, which is not in the repo: only the template "
                   f"{d.env_template} ships" if missing else
                   f"there is no {relpath(wanted_path, root)}: only the template {d.env_template} ships")
            d.undecided.append(Undecided("project.env_file", why,
                                         f"cp {d.env_template} {relpath(wanted_path, root)} (and fill it in), then "
                                         f"`graphrag-migrate init --force`, or --set project.env_file=PATH"))
            return
    if missing:
        d.undecided.append(Undecided("project.env_file", f"{missing[0][1]} names {relpath(wanted_path, root)}, "
                                     "which is not there (and no template beside it)",
                                     f"create {relpath(wanted_path, root)}, or --set project.env_file=PATH"))
    else:
        d.undecided.append(Undecided("project.env_file", "compose reads no env file for the backend (no env_file:, "
                                     f"no {relpath(stack.project_dir / '.env', root)})",
                                     f"create {relpath(stack.project_dir / '.env', root)} and pass it to the backend "
                                     "(env_file: .env), or --set project.env_file=PATH"))


def _notes(d: Discovery) -> None:
    """What the migration should know about this repo (informational; no migrate.yaml key)."""
    stack = d.stack
    backend = stack.services.get(d.backend_service) if stack and d.backend_service else None
    if backend is not None and not backend.env_files and backend.environment:
        d.notes.append(f"env reaches {d.backend_service} only through its environment: ({backend.line('environment')}): "
                       "phase3 adds LLM_BACKEND, VLLM_BASE_URL and VLLM_MODEL to it in its own compose file, "
                       "interpolated from the env file (your compose file stays as it is)")
    if d.settings and d.settings.env_prefix:
        d.notes.append(f"settings read variables with the prefix {d.settings.env_prefix} "
                       f"({ev(d.settings.file, d.settings.config_line or d.settings.line)}): the backend reads "
                       f"{d.settings.env_prefix}LLM_BACKEND, not LLM_BACKEND")
    if d.provider_switch:
        p = d.provider_switch
        d.notes.append(f"the backend already switches providers with {p.variable} ({ev(p.file, p.line)}; "
                       f"{', '.join(p.values)})")
    if d.tool_calls:
        d.notes.append(f"the backend calls tools or asks for structured output ({', '.join(d.tool_calls[:3])}"
                       f"{', …' if len(d.tool_calls) > 3 else ''}): vLLM is started with --enable-auto-tool-choice "
                       "--tool-call-parser hermes (vllm.tool_calling: auto), else it answers those calls HTTP 400")
    if (d.ollama_model or "").lower().startswith("qwen3"):
        d.notes.append(f"Ollama's {d.ollama_model} thinks by default (<think>…</think> in its answers); on vLLM "
                       "model.reasoning decides: off (default, no thinking), parse (vLLM's reasoning parser: "
                       "ChatOpenAI drops the thinking), raw (as on Ollama)")
    if d.health["path"] not in (None, "/health"):
        d.notes.append(f"the backend's health endpoint is {d.health['path']}; graphrag-migrate probes /health")
    elif d.health["path"] is None and d.routes:
        d.notes.append("the backend has no /health: graphrag-migrate's backend probes get 404")
    if d.chat_endpoint is not None and not d.chat_endpoint.streaming:
        d.notes.append(f"{d.chat_endpoint.method} {d.chat_endpoint.path} answers in one response (no streaming)")
    if d.chat_endpoint is not None and d.chat_endpoint.session_field is None:
        d.notes.append(f"{d.chat_endpoint.path}'s body has no session field: the two-turn probe through the backend "
                       "cannot find its history")
    if d.existing_vllm_service and stack:
        name = next(n for n, s in stack.services.items() if _is_vllm_service(n, s))
        d.notes.append(f"the compose file already has a vLLM service '{name}' "
                       f"({stack.services[name].declared[0] if stack.services[name].declared else ''}); "
                       "graphrag-migrate adds its own")
