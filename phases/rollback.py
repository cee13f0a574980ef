"""Rollback: back to Ollama, from wherever the migration stopped.

Order matters: the env file is fixed first (it needs nothing but the disk), then vLLM is stopped,
then the backend is recreated so it reads the env file again, then Ollama's models come back, then
both are probed. Each action is attempted even when an earlier one failed, and each says what it did
or could not do. Works with state.json missing or corrupt (the file records are rebuilt from the audit
log and checked against the backups; the rest comes from migrate.yaml), with the vLLM container gone,
and with dockerd down (the env file is still fixed). Running it twice is safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from migrator.core.engine import NOTHING_TO_UNDO, Context, Phase, rollback_phase
from migrator.files.envfile import EnvFile
from migrator.core.errors import DockerUnavailable, EnvironmentMissing, ExitCode, MigrateError, StateCorrupt
from migrator.core.ledger import now_iso, sha256_bytes

OLLAMA = "ollama"


@dataclass
class Action:
    name: str
    ok: bool
    result: str
    environment: bool = False  # failed because something it needs is not there (dockerd down)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RollbackReport:
    actions: list[Action] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    def add(self, name: str, ok: bool, result: str, environment: bool = False) -> Action:
        action = Action(name, ok, result, environment)
        self.actions.append(action)
        return action

    @property
    def exit_code(self) -> ExitCode:
        if any(a.environment for a in self.actions):
            return ExitCode.ENVIRONMENT
        if not all(a.ok for a in self.actions):
            return ExitCode.CHECK_FAILED
        return ExitCode.OK

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == ExitCode.OK, "exit_code": int(self.exit_code),
                "started_at": self.started_at, "seconds": round(self.seconds, 2),
                "actions": [a.to_dict() for a in self.actions]}


def _attempt(report: RollbackReport, name: str, fn) -> None:
    try:
        ok, result = fn()
        report.add(name, ok, result)
    except (DockerUnavailable, EnvironmentMissing) as exc:
        report.add(name, False, exc.one_line(), environment=True)
    except MigrateError as exc:
        report.add(name, False, exc.one_line())


def rollback(ctx: Context, phases: list[Phase], wait_s: float = 60.0) -> RollbackReport:
    """Return the project to Ollama. The caller holds the project lock."""
    report = RollbackReport(started_at=now_iso())
    start = time.monotonic()
    ledger = ctx.ledger
    try:
        ledger.load()
        # state.json gone but the audit log shows earlier runs: the state was lost, not never written.
        state_ok = ledger.state_path.exists() or not ledger.read_audit()
        if not state_ok:
            report.add("state", True, f"{ledger.state_path.name} is missing but the audit log shows earlier runs: "
                                      "rolling back from migrate.yaml alone")
    except StateCorrupt as exc:
        state_ok = False
        moved = ledger.quarantine_state()
        report.add("state", True, f"{exc.message}; set aside as {moved.name if moved else '-'}, "
                                  "rolling back from migrate.yaml alone")

    if not state_ok:
        ctx.resources["ollama_unloaded"] = _unloaded_from_audit(ledger.read_audit())
        recovered, left_out = ledger.files_from_audit()
        ledger.state["files"] = recovered
        if recovered or left_out:
            report.add("file records", not left_out,
                       f"{len(recovered)} rebuilt from the audit log"
                       + (f"; not restorable (backup missing or not the logged original): {', '.join(left_out)}"
                          if left_out else ""))
    if state_ok:
        for phase in reversed(phases):
            for step_id, result in rollback_phase(phase, ctx):
                report.add(step_id, not result.startswith("failed"), result)

    _attempt(report, "env file", lambda: _restore_env(ctx))
    env_rel = ledger.relpath(ctx.env_path)
    for rel in sorted(ledger.state["files"]):
        if rel != env_rel:
            result = ctx.writer.restore(rel)
            report.add(f"file {rel}", "missing" not in result, result)
    for created in ctx.writer.remove_created_dirs():
        report.add(f"directory {created}", True, "removed (graphrag-migrate created it; now empty)")
    if _staging_may_run(ctx, state_ok):
        _attempt(report, "remove staging", lambda: _remove_staging(ctx))
    _attempt(report, "stop vLLM", lambda: _stop_vllm(ctx, state_known=state_ok))
    _attempt(report, "recreate backend", lambda: _recreate_backend(ctx))
    _attempt(report, "reload Ollama models", lambda: _reload_ollama(ctx))
    _attempt(report, "Ollama answers", lambda: _probe_ollama(ctx))
    model = ctx.resources.get("model") or {}
    if model.get("path"):
        report.add("downloaded model", True, f"kept at {model['path']} ({model.get('bytes', 0) / 2**30:.1f} GiB); "
                                             "delete it with `hf cache rm` when you no longer need it")
    _attempt(report, "backend answers", lambda: _probe_backend(ctx, wait_s))

    for name, record in ledger.state["phases"].items():
        if record.get("status") not in (None, "pending"):
            record["status"] = "rolled_back"
    ledger.state["last_rollback"] = {"at": report.started_at, "ok": report.exit_code == ExitCode.OK,
                                     "actions": [a.to_dict() for a in report.actions]}
    ledger.save()
    ledger.audit("rollback", "rollback", "ok" if report.exit_code == ExitCode.OK else "incomplete",
                 actions=[a.to_dict() for a in report.actions])
    report.seconds = time.monotonic() - start
    return report


def _unloaded_from_audit(entries: list[dict]) -> list[dict]:
    """Ollama models phase1 unloaded since the last complete rollback, for a rollback whose state was lost."""
    unloaded: dict[str, dict] = {}
    for entry in entries:
        if entry.get("action") == "rollback" and entry.get("result") == "ok":
            unloaded.clear()
        elif entry.get("action") == "ollama-unload" and entry.get("model"):
            unloaded[entry["model"]] = {"model": entry["model"], "keep_alive": entry.get("keep_alive", "5m")}
    return list(unloaded.values())


def _restore_env(ctx: Context) -> tuple[bool, str]:
    path, writer, ledger = ctx.env_path, ctx.writer, ctx.ledger
    rel = ledger.relpath(path)
    record = ledger.state["files"].get(rel)
    notes, as_before, backup_lost = [], False, False
    current = writer.read(path)
    if record is not None:
        unchanged_since_write = current is not None and sha256_bytes(current) == record.get("written_sha256")
        if unchanged_since_write or current is None:
            result = writer.restore(rel)
            notes.append(result)
            as_before = result in ("restored from backup", "already as before")
            backup_lost = "missing" in result
        elif record.get("existed") and sha256_bytes(current) == record.get("original_sha256"):
            notes.append("already as before")
            as_before = True
        else:
            notes.append("edited by hand since graphrag-migrate wrote it: your edits are kept"
                         f" (pre-migration copy: {ledger.root.name}/{record.get('backup', '-')})")
        current = writer.read(path)
    if current is None:
        return False, f"{path} does not exist and there is no backup: create it with LLM_BACKEND=ollama"
    env = EnvFile.from_bytes(current)
    updated = env
    if env.get("LLM_BACKEND") != OLLAMA:
        updated = updated.set("LLM_BACKEND", OLLAMA)
        notes.append("LLM_BACKEND=ollama set")
    else:
        notes.append("LLM_BACKEND=ollama")
    if not as_before:  # not the pre-migration bytes: phase3's compose file must leave COMPOSE_FILE too
        from phases.phase3 import without_vllm_compose

        updated, dropped = without_vllm_compose(updated)
        if dropped:
            notes.append(f"{dropped} taken out of COMPOSE_FILE (plain `docker compose` would start vLLM again)")
    if updated is not env:
        writer.write(path, updated.to_bytes(), "rollback")
        if EnvFile.from_bytes(writer.read(path) or b"").get("LLM_BACKEND") != OLLAMA:
            return False, f"wrote LLM_BACKEND=ollama to {path} but it does not read back"
    if backup_lost:
        notes.append("the rest of the file is as graphrag-migrate left it: compare it with your own copy")
    return not backup_lost, "; ".join(notes)


def _staging_may_run(ctx: Context, state_known: bool) -> bool:
    """phase4's staging project outlived its step's own rollback (recorded), or the state was lost."""
    from phases import staging

    return bool(ctx.resources.get("staging")) or (not state_known and staging.applies(ctx.settings))


def _remove_staging(ctx: Context) -> tuple[bool, str]:
    """Found by compose's project label: works without state and without compose files."""
    from phases import staging

    result = staging.teardown(ctx)
    return True, "no staging project running" if result == NOTHING_TO_UNDO else result


def _stop_vllm(ctx: Context, state_known: bool = True) -> tuple[bool, str]:
    from migrator.adapters import process

    vllm = ctx.resources.get("vllm") or {}
    results = []
    if vllm.get("process"):
        handle = process.ProcessHandle.from_dict(vllm["process"])
        results.append(f"process {handle.pid}: {process.stop(handle, ctx.settings.vllm.stop_timeout_s)}")
    elif ctx.settings.vllm.runtime == "process" and not state_known:
        # State lost or corrupt: find the vLLM by its port, and stop it only if it is vLLM on that port.
        # (With readable state and no record, graphrag-migrate started no vLLM: it stops nothing.)
        pid = process.listening_pid(ctx.settings.vllm.port)
        command = process.cmdline(pid) if pid else ""
        if pid and ctx.settings.vllm.server_module in command and f"--port {ctx.settings.vllm.port}" in command:
            handle = process.ProcessHandle(pid, process._start_ticks(pid), command.split(), "")
            results.append(f"process {pid} (found on port {ctx.settings.vllm.port}, not in state): "
                           f"{process.stop(handle, ctx.settings.vllm.stop_timeout_s)}")
    uses_docker = ctx.settings.vllm.runtime == "docker" or vllm.get("container")
    if uses_docker:
        name = vllm.get("container") or ctx.settings.vllm.container_name
        results.append(f"container {name}: {ctx.docker.stop(name, ctx.settings.vllm.stop_timeout_s)}")
    ctx.resources.pop("vllm", None)
    return True, "; ".join(results) or "no vLLM was started by graphrag-migrate"


def _recreate_backend(ctx: Context) -> tuple[bool, str]:
    from migrator.adapters.docker import Compose

    compose_path = ctx.compose_path
    service = ctx.settings.project.backend_service
    if ctx.settings.project.backend_runtime == "none":
        return True, "project.backend_runtime is 'none': the backend re-reads the env file itself"
    if not compose_path.exists():
        return True, f"{compose_path} not found: no compose-managed backend to recreate"
    compose = Compose(compose_path.parent, [compose_path], ctx.env_path if ctx.env_path.exists() else None,
                      ctx.settings.project.compose_project_name)
    ctx.docker.ping()
    listed = compose.run("ps", "-a", "-q", service)
    if listed.returncode != 0:
        return False, f"docker compose ps failed: {listed.stderr.strip()[:200]}"
    if not listed.stdout.strip():
        return True, f"service '{service}' is not deployed: nothing to recreate"
    proc = compose.recreate(service)
    if proc.returncode != 0:
        return False, f"docker compose up -d --no-deps {service} failed: {proc.stderr.strip()[:300]}"
    return True, f"service '{service}' recreated (reads LLM_BACKEND=ollama)"


def _reload_ollama(ctx: Context) -> tuple[bool, str]:
    from migrator.adapters.http import OllamaServer

    unloaded = ctx.resources.get("ollama_unloaded") or []
    if not unloaded:
        return True, "no Ollama model was unloaded by graphrag-migrate"
    server = OllamaServer(ctx.settings.ollama.url)
    back, failed = [], []
    for item in unloaded:
        probe = server.set_keep_alive(item["model"], item.get("keep_alive", "5m"))
        (back if probe.ok else failed).append(item)
    ctx.resources["ollama_unloaded"] = failed
    if failed:
        return False, f"could not reload {', '.join(i['model'] for i in failed)} from {server.base_url}"
    return True, f"reloaded {', '.join(i['model'] for i in back)}"


def _probe_ollama(ctx: Context) -> tuple[bool, str]:
    from migrator.adapters.http import OllamaServer

    probe = OllamaServer(ctx.settings.ollama.url).version()
    if not probe.ok:
        return False, f"Ollama does not answer: {probe.describe()} — start Ollama before the backend needs it"
    version = probe.body.get("version", "?") if isinstance(probe.body, dict) else "?"
    return True, f"Ollama {version} answers at {ctx.settings.ollama.url}"


def _probe_backend(ctx: Context, wait_s: float) -> tuple[bool, str]:
    from migrator.adapters.http import get

    url = ctx.settings.project.backend_url.rstrip("/") + "/health"
    deadline = time.monotonic() + wait_s
    last = None
    while True:
        last = get(url, timeout=2.0)
        if last.ok:
            backend = last.body.get("llm_backend") if isinstance(last.body, dict) else None
            if backend in (None, OLLAMA):
                return True, f"backend answers at {url}" + (f" (llm_backend={backend})" if backend else "")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if last is not None and last.ok:
        return False, f"backend at {url} still reports llm_backend={last.body.get('llm_backend')}"
    return False, f"backend does not answer at {url}: {last.describe() if last else '-'}"
