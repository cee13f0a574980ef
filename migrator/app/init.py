"""`graphrag-migrate init`: what `discover` found, mapped onto migrate.yaml's keys and written.

Only keys that exist are written (the loader refuses any other); every value carries its evidence as a
comment (`file:line`). What has no key yet (how env reaches the backend, the settings style, the LLM call
sites, a provider switch, the target Python, several LLM services …) goes into a `# discovered
(informational)` comment block at the end, and into `--json` under `discovered`. What could not be decided
is listed (and left at its default); a key with several candidates stops init (exit 1) naming them and the
`--set` that settles it, unless `--yes` takes the best guess — said in a comment and on stderr.

A new migrate.yaml is written atomically. An existing one is replaced only with `force`, through the
ledger's FileWriter: backed up under `.graphrag-migrate/backups/` first, audited, and restored by `rollback`.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrator.app.discover import (Choice, Discovery, Undecided, _loopback, discover, ev, inside, published,
                                   relpath)
from migrator.core.config import CONFIG_FILENAME, Settings, describe_keys, load_settings
from migrator.core.errors import CheckFailed, ConfigError, ExitCode

_DEFAULTS = {key: default for key, default, _help in describe_keys()}
_SECTION_ORDER = [key.split(".")[0] for key, _d, _h in describe_keys()]


@dataclass
class Value:
    key: str
    value: Any
    evidence: list[str] = field(default_factory=list)
    guessed: str = ""  # with --yes: why this candidate, and the other candidates


@dataclass
class InitResult:
    config: str
    values: list[Value] = field(default_factory=list)
    undecided: list[Undecided] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)  # unresolved: nothing written
    guessed: list[Choice] = field(default_factory=list)
    discovery: Discovery | None = None
    text: str = ""
    written: bool = False
    dry_run: bool = False
    backup: str | None = None
    replaced: bool = False

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.CHECK_FAILED if self.choices else ExitCode.OK

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "exit_code": int(self.exit_code), "config": self.config, "written": self.written,
            "dry_run": self.dry_run, "replaced": self.replaced, "backup": self.backup,
            "values": {v.key: v.value for v in self.values},
            "evidence": {v.key: v.evidence for v in self.values},
            "guessed": {v.key: v.guessed for v in self.values if v.guessed},
            "undecided": [u.to_dict() for u in self.undecided],
            "choices": [c.to_dict() for c in self.choices],
            "discovered": self.discovery.to_dict() if self.discovery else None,
            "text": self.text,
        }


# ---- discovery → migrate.yaml keys ---------------------------------------------------------------------
def propose(d: Discovery) -> tuple[list[Value], list[Undecided]]:
    """The migrate.yaml values the discovery supports, each with its evidence."""
    values: list[Value] = []
    undecided: list[Undecided] = list(d.undecided)

    def put(key: str, value: Any, *evidence: str) -> None:
        if value is None or value == "":
            return
        values.append(Value(key, value, [e for e in evidence if e]))

    stack, root = d.stack, d.root
    backend = stack.services.get(d.backend_service) if stack and d.backend_service else None
    if stack is not None and stack.base_files:
        put("project.compose_file", relpath(stack.base_files[0], root), *d.evidence.get("compose_files", []))
        if d.env_file:
            put("project.env_file", d.env_file, *d.evidence.get("env_file", []))
        if stack.name:
            put("project.compose_project_name", stack.name, stack.name_evidence)
    if backend is not None:
        put("project.backend_service", d.backend_service, *d.evidence.get("backend_service", []))
        _backend_url(d, backend, put, undecided)
        if len(d.llm_services) > 1:  # phase3 wires vLLM into each (networks, env keys)
            put("project.llm_services", list(d.llm_services),
                *(e for name in d.llm_services for e in d.evidence.get(f"llm_services.{name}", [])[:1]))
    source = root / d.backend["dir"] if d.backend.get("dir") else None
    if source is not None:
        put("backend.dir", d.backend["dir"], *d.evidence.get("backend.dir", []))
        if d.backend.get("import_root") and relpath(root / d.backend["import_root"], source) != ".":
            put("backend.import_root", relpath(root / d.backend["import_root"], source),
                *d.evidence.get("backend.app", []))
        if d.settings is not None:
            put("backend.config_module", relpath(root / d.settings.file, source), ev(d.settings.file, d.settings.line))
            fields = list(d.settings.fields)
            if d.settings.case_sensitive and d.settings.style.startswith("pydantic") and fields \
                    and all(f.isupper() for f in fields):
                values.append(Value("backend.settings_fields", ["LLM_BACKEND", "VLLM_BASE_URL", "VLLM_MODEL"],
                                    [ev(d.settings.file, d.settings.line),
                                     "(UPPERCASE case-sensitive fields: the env names)"]))
        llm_module = _llm_module(d, source)
        if llm_module is not None:
            put("backend.llm_module", relpath(root / llm_module.file, source), ev(llm_module.file, llm_module.line))
        if d.backend.get("python_source") not in (None, "default"):
            put("backend.python_version", d.backend["python"], *d.evidence.get("backend.python", []))
        if d.target_python:  # newer than this tool's: it parses what this Python cannot
            put("backend.python", d.target_python, *d.evidence.get("backend.python", []),
                f"(Python {d.backend['python']} found on PATH)")
        if d.dependency_file:
            put("backend.requirements", relpath(root / d.dependency_file["path"], source),
                *d.evidence.get("dependency_file", []))
        _unittest_command(root, source, put)
        chat = d.chat_endpoint
        if chat is not None:
            put("backend.chat_path", chat.path, ev(chat.file, chat.line))
            if chat.message_field:
                put("backend.chat_message_field", chat.message_field, chat.message_line)
            if chat.session_field:
                put("backend.chat_session_field", chat.session_field, chat.session_line)
        elif d.routes:
            undecided.append(Undecided("backend.chat_path", "no POST route that streams or looks like chat "
                                       f"among the backend's {len(d.routes)} routes",
                                       "--set backend.chat_path=/your/chat (the streaming endpoint)"))
        if d.history is not None:
            put("backend.history_path", re.sub(r"\{[^}]*\}", "{session}", d.history.path, count=1),
                ev(d.history.file, d.history.line))
    if d.ollama_url:
        put("ollama.url", d.ollama_url, *(d.evidence.get("ollama.published_port") or d.evidence.get("ollama.url", [])))
    if d.ollama_model:
        put("ollama.model", d.ollama_model, *d.evidence.get("ollama.model", []))
    if stack is not None:
        _vllm_clashes(d, put)
    return values, undecided


def _backend_url(d: Discovery, backend, put, undecided: list[Undecided]) -> None:
    from migrator.app.discover import parse_command

    entry = parse_command(backend.command)
    port = entry.port or "8000"
    if backend.network_mode == "host":
        put("project.backend_url", f"http://localhost:{port}", backend.line("command") or backend.line("network_mode"),
            "(network_mode: host: the port the server listens on)")
        _port_variable(d, backend, put)
        return
    for spelled, resolved, where in backend.ports:
        host, pub, target = published(resolved)
        if pub and (target == port or len(backend.ports) == 1):
            put("project.backend_url", f"http://{_loopback(host)}:{pub}", where)
            _port_variable(d, backend, put)
            return
    undecided.append(Undecided(
        "project.backend_url", f"the backend service {d.backend_service} ({backend.declared[0] if backend.declared else ''}) "
        f"publishes no port: graphrag-migrate probes its /health from this host",
        f"publish it on loopback (ports: [\"127.0.0.1:{port}:{port}\"]) and --set project.backend_url=http://localhost:{port}"))


def _port_variable(d: Discovery, backend, put) -> None:
    """deploy.staging_port_variable: the variable the backend's port is read from (`${BACKEND_PORT:-8000}`)."""
    from migrator.app.discover import load_yaml, variables_in

    for rel in d.compose_files:
        try:
            data, lines = load_yaml(d.root / rel)
        except Exception:
            continue
        spec = ((data or {}).get("services") or {}).get(d.backend_service) or {}
        found = []
        for i, port in enumerate(spec.get("ports") or []):
            text = str(port.get("published", "")) if isinstance(port, dict) else str(port).rsplit(":", 1)[0]
            found += [(n, ev(rel, lines.get(("services", d.backend_service, "ports", i)))) for n in variables_in(text)]
        command = spec.get("command")
        text = " ".join(map(str, command)) if isinstance(command, list) else str(command or "")
        m = re.search(r"--port[= ]+(\S+)", text)
        if m:
            found += [(n, ev(rel, lines.get(("services", d.backend_service, "command"))))
                      for n in variables_in(m.group(1))]
        if found:
            put("deploy.staging_port_variable", found[0][0], found[0][1])
            return


def _llm_module(d: Discovery, source: Path):
    sites = [s for s in d.llm_call_sites if inside(d.root / s.file, source)]
    if not sites:
        return None
    ollama = [s for s in sites if s.kwargs]  # the Ollama constructions
    pool = ollama or sites
    return sorted(pool, key=lambda s: (not s.streaming, s.file, s.line))[0]


def _vllm_clashes(d: Discovery, put) -> None:
    """vLLM's service name, container name and port, moved off ones the user's compose already uses."""
    from migrator.app.discover import managed

    stack = d.stack
    defaults = Settings().vllm
    names = set(stack.services)
    if defaults.service_name in names and not managed(stack.services[defaults.service_name]):
        name = next(c for c in ("graphrag-vllm", "vllm-graphrag", "vllm-migrate") if c not in names)
        put("vllm.service_name", name, *stack.services[defaults.service_name].declared[:1],
            f"(a service named {defaults.service_name} is already there)")
    containers = {s.container_name for s in stack.services.values() if s.container_name and not managed(s)}
    if defaults.container_name in containers:
        put("vllm.container_name", "graphrag-migrate-vllm", "(container_name graphrag-vllm is taken)")
    used = {}
    for s in (s for s in stack.services.values() if not managed(s)):
        for _spelled, resolved, where in s.ports:
            _host, pub, _target = published(resolved)
            if pub and pub.isdigit():
                used[int(pub)] = where
    if defaults.port in used:
        port = next(p for p in range(defaults.port + 1, defaults.port + 100) if p not in used)
        put("vllm.port", port, used[defaults.port], f"(host port {defaults.port} is already published)")


# ---- the file ----------------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def render(values: list[Value], undecided: list[Undecided], d: Discovery) -> str:
    lines = ["# migrate.yaml, written by `graphrag-migrate init` from what it read in this repo.",
             "# After each value: its evidence (file:line). Keys not here keep their defaults (README, Configuration).",
             "# Re-run `graphrag-migrate init --force` after the repo changes (this file is backed up first)."]
    sections: dict[str, list[Value]] = {}
    for v in values:
        sections.setdefault(v.key.split(".")[0], []).append(v)
    for section in sorted(sections, key=_SECTION_ORDER.index):
        lines += ["", f"{section}:"]
        for v in sections[section]:
            comment = ", ".join(_one_line(e) for e in v.evidence)
            if v.guessed:
                comment += ("; " if comment else "") + f"GUESSED (--yes): {_one_line(v.guessed)}"
            lines.append(f"  {v.key.split('.', 1)[1]}: {_yaml_scalar(v.value)}" + (f"  # {comment}" if comment else ""))
    if undecided:
        lines += ["", "# undecided: left at their defaults; settle each with --set KEY=VALUE (or edit this file)"]
        for u in undecided:
            lines += [f"#   {u.key}: {_one_line(u.why)}", f"#     fix: {_one_line(u.fix)}"]
    lines += ["", "# discovered (informational): what migrate.yaml has no key for"]
    lines += [f"#   {_one_line(line)}" for line in informational(d)]
    return "\n".join(lines) + "\n"


def informational(d: Discovery) -> list[str]:
    out = []
    if d.compose_files:
        out.append(f"compose files: {', '.join(d.compose_files)} (merged model: {d.compose_model})")
    for name in d.llm_services:
        s = d.services[name]
        why = ", ".join(d.evidence.get(f"llm_services.{name}", []))
        env = {"env_file": "env_file:", "environment": "environment: only", "both": "env_file: and environment:",
               None: "no env from compose"}[s["env_delivery"]]
        keys = f" ({', '.join(s['env_keys_from_compose'])})" if s["env_keys_from_compose"] else ""
        out.append(f"LLM service {name}{', the backend' if name == d.backend_service else ''} ({why}): "
                   f"env via {env}{keys}; networks {', '.join(s['networks']) or s.get('network_mode', '-')}; "
                   f"ports {', '.join(s['ports']) or 'none published'}; healthcheck {s['healthcheck'] or 'none'}")
    if d.env_template:
        out.append(f"env template: {d.env_template} (no env file yet)")
    b = d.backend
    if b.get("dir"):
        out.append(f"backend: {b['dir']}, import root {b['import_root']}, app {b['app'] or '?'}; target Python "
                   f"{b['python']} ({b['python_source']}: {', '.join(d.evidence.get('backend.python', []))})")
    if d.settings:
        s = d.settings
        out.append(f"settings: {s.style} {s.cls or '(module constants)'} in {ev(s.file, s.line)}, "
                   f"{'case-sensitive' if s.case_sensitive else 'case-insensitive'}, "
                   f"prefix {s.env_prefix or '(none)'}; Ollama URL {s.ollama_url_name} "
                   f"(env {s.env_of(s.ollama_url_name)}), model {s.ollama_model_name} "
                   f"(env {s.env_of(s.ollama_model_name)})")
    for site in d.llm_call_sites:
        out.append(f"LLM call site: {ev(site.file, site.line)} {site.cls}"
                   + (f" ({site.why_streaming})" if site.streaming else " (not streamed)"))
    p = d.provider_switch
    out.append(f"provider switch: {p.variable} at {ev(p.file, p.line)} ({p.style}: {', '.join(p.values)})"
               if p else "provider switch: none")
    if d.dependency_file:
        out.append(f"dependency file: {d.dependency_file['path']} ({d.dependency_file['kind']})")
    o = d.ollama
    if o["service"]:
        out.append(f"Ollama: compose service {o['service']}, "
                   + (f"published on host port {o['published_port']}" if o["published_port"] else "no published port"))
    elif d.ollama_url:
        out.append(f"Ollama: not a compose service; the backend is given {', '.join(d.evidence.get('ollama.url', []))}")
    c = d.chat_endpoint
    if c:
        out.append(f"chat endpoint: {c.method} {c.path} ({'streaming' if c.streaming else 'one response'}) at "
                   f"{ev(c.file, c.line)}, question in {c.message_field!r}")
    h = d.health
    out.append(f"health: GET {h['path']}" + (f", names the LLM in {h['llm_field']!r}" if h["llm_field"] else "")
               if h["path"] else "health: no health endpoint")
    if d.existing_vllm_service:
        out.append("a vLLM service is already in the compose file")
    if not d.runs_here:
        out.append("some backend Python does not parse on this Python (see the notes)")
    out += [f"note: {n}" for n in d.notes]
    return out


# ---- the command ------------------------------------------------------------------------------------
def _check_value(key: str, value: Any) -> str | None:
    try:
        load_settings(None, environ={}, overrides={key: value})
    except ConfigError as exc:
        return exc.one_line()
    return None


def init_project(project: Path, config: Path | None = None, overrides: dict | None = None, force: bool = False,
                 dry_run: bool = False, yes: bool = False, use_compose: bool = True) -> InitResult:
    project = Path(project)
    if not project.is_dir():
        raise ConfigError(f"project directory {project} does not exist", "pass --project DIR")
    path = config if config is not None else project / CONFIG_FILENAME
    shown = relpath(path, project) if inside(path, project) else str(path)
    if path.exists() and not force and not dry_run:
        raise CheckFailed(f"{shown} exists: init does not overwrite it",
                          "pass --force to replace it (the old one is backed up under .graphrag-migrate/backups/ "
                          "and `rollback` restores it), or --dry-run to see what it would write")
    overrides = dict(overrides or {})
    typed = {}
    for key, raw in overrides.items():  # a bad --set fails here, naming the key (exit 2)
        section, _, name = key.partition(".")
        typed[key] = getattr(getattr(load_settings(None, environ={}, overrides={key: raw}), section), name)
    d = discover(project, use_compose=use_compose, chosen=typed)
    values, undecided = propose(d)
    # a discovered value the loader would refuse is undecided, not written
    kept = []
    for v in values:
        problem = _check_value(v.key, v.value)
        if problem:
            undecided.append(Undecided(v.key, f"found {v.value!r} ({', '.join(v.evidence)}), which migrate.yaml "
                                       f"refuses: {problem}", f"--set {v.key}=VALUE"))
        else:
            kept.append(v)
    values = kept
    result = InitResult(shown, discovery=d, dry_run=dry_run, replaced=path.exists())
    for choice in d.choices:
        if choice.key in overrides:
            continue
        if not yes:
            result.choices.append(choice)
            continue
        result.guessed.append(choice)
        others = "; ".join(f"{c} ({', '.join(e)})" for c, e in choice.candidates if c != choice.best)
        guess = f"{choice.what}: took {choice.best} ({choice.why}); also {others}; --set {choice.key}=... chooses"
        existing = next((v for v in values if v.key == choice.key), None)
        if existing is None:
            existing = Value(choice.key, choice.best, next((e for c, e in choice.candidates if c == choice.best), []))
            values.append(existing)
        existing.value, existing.guessed = choice.best, guess
    for key, value in typed.items():
        values = [v for v in values if v.key != key] + [Value(key, value, ["(--set on the command line)"])]
    settled = {v.key for v in values}
    undecided = [u for u in undecided if u.key not in settled]
    values.sort(key=lambda v: [k for k, _d, _h in describe_keys()].index(v.key) if v.key in _DEFAULTS else 999)
    result.values, result.undecided = values, undecided
    if result.choices:
        return result  # exit 1, nothing written: the operator chooses (--set) or lets init guess (--yes)
    result.text = render(values, undecided, d)
    _loads(result.text)
    if dry_run:
        return result
    data = result.text.encode("utf-8")
    if path.exists():
        from migrator.core.fileops import FileWriter
        from migrator.core.ledger import Ledger

        ledger = Ledger(project)
        with ledger.locked("init --force"):
            ledger.load()
            change = FileWriter(ledger).write(path, data, "init")
            record = ledger.state["files"].get(ledger.relpath(path), {})
            if record.get("backup"):
                result.backup = str(Path(ledger.root.name) / record["backup"])
            result.written = change is not None
    else:
        from migrator.core.ledger import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        result.written = True
    return result


def _loads(text: str) -> Settings:
    """The file as the loader reads it (a failure here is a bug in init, not the user's)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / CONFIG_FILENAME
        probe.write_text(text, encoding="utf-8")
        return load_settings(probe, environ={})


def _unittest_command(root: Path, source: Path, put) -> None:
    """A backend whose tests are unittest-only (no pytest anywhere) is tested as it tests itself: with
    `unittest discover`, which needs no pytest in the backend's Python."""
    from migrator.files.switch_test import switch_test_layout

    layout = switch_test_layout(source)
    if layout.runner != "unittest":
        return
    tests = layout.path.parent
    top = " -t ." if (tests / "__init__.py").is_file() else ""
    pattern = "" if layout.path.name.startswith("test") else f" -p '*_test.py'"
    first = next(iter(sorted(tests.glob("*test*.py"))), None)
    put("backend.test_command", f"python3 -m unittest discover -s {relpath(tests, source)}{top}{pattern}",
        ev(relpath(first, root), 1) if first else "", "(its tests are unittest TestCases; no pytest in its files)")
