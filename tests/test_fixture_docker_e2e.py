"""The fixture projects' own backends (FastAPI + LangChain, their code) migrated under real Docker compose
(issue #13): `init --yes` → phase1 → `phase2 --scaffold` → phase3 → bench → phase4 → status → rollback on a
temp copy of three shapes — `envlist-getenv` (env only through an `environment:` list with `${VAR}`
interpolation, `os.getenv` constants, `/api/chat`, `/healthz`, code bind-mounted into `image: ${API_IMAGE}`),
`upper-pydantic-template` (UPPERCASE case-sensitive pydantic fields, only `docker/.env.example` shipped: the
test makes the `cp` phase3 names, as the operator would) and `compose-include` (a top-level file that only
`include:`s per-service files, an `environment:` map, dataclass settings). phase4's proof must pass because
vLLM served the question (its counters rose), the backend then answers a direct question with vLLM's text,
and after rollback the backend answers from the Ollama stand-in again, every user file is byte-identical to
after init, no container is left and `status` exits 0. A mis-wired variant (envlist-getenv without
`--scaffold`: the backend's code never reads LLM_BACKEND) is refused by phase4 naming phase2, and switched
with `--accept-failed phase2` it fails the proof (vLLM's counters do not rise) and rolls back by itself.

What the test changes in its copy, and why. The test dockerd runs with `--bridge=none` and test traffic goes
to loopback only (never to a Docker bridge address), so every container uses host networking:
- each service of the fixture's compose files gets `network_mode: host`; its `ports:`, `networks:` and
  `depends_on:` go, as do the top-level `networks:` (compose cannot join a bridge here);
- the port in its command (and its healthcheck's URL) becomes a free port, `--host 0.0.0.0` becomes
  `127.0.0.1` (on the host's network 0.0.0.0 would listen on every interface);
- the fixture's `ollama/ollama` service (and its volume) goes: no image registry is reachable, and the
  Ollama stand-in runs as a process on 127.0.0.1 — every `http://ollama:11434` in the env files and compose
  files points at it instead;
- the backend runs the fixture's own code, bind-mounted, in the test's backend image (python, FastAPI,
  uvicorn, pydantic-settings, langchain-ollama, langchain-openai: every fixture requirement here) with
  `/opt/venv/bin` on PATH, so the fixtures' own `uvicorn …` commands and `python -c …` healthchecks run as
  written: `${API_IMAGE}` is set in envlist-getenv's `.env`, a literal image is replaced, and
  compose-include's `build: ../backend` (the fixture ships no Dockerfile) becomes that image with the
  directory bind-mounted and `working_dir` set.
How env reaches the service (`environment:` list or map with `${VAR}`, `env_file:`), the settings style, the
code and the compose layout (`include:`, `docker/`) stay as the fixture has them. Reachability by service
name on a bridge network is covered by the fast tier (`tests/test_phase3_wiring.py`, through `docker compose
config`). migrate.yaml is init's, plus what this box needs as `--set` (the vLLM simulator's image as vLLM,
host networking, free ports, the stand-ins' URLs, a short watch, no staging — the fixtures' backends listen
on a fixed port, which staging's second backend on the host network could not share — and gates a CPU can
pass).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import SESSION_TAG, run_cli, tree_digest
from migrator.adapters.net import free_port, wait_port
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile

pytestmark = pytest.mark.docker

PROJECTS = Path(__file__).resolve().parent / "projects"
OLLAMA_IN_COMPOSE = "http://ollama:11434"
GATES = (  # CPU and a simulator: the gates' plumbing is under test, not this machine's speed
    "gates:\n"
    "  - {name: speed, metric: per_user_output_tokens_per_s, op: '>', threshold: 0}\n"
    "  - {name: errors, metric: error_rate, op: '<=', threshold: 0}\n"
    "  - {name: prod errors, metric: error_rate, op: '<', threshold: 0.05, source: metrics}\n")


@dataclass
class Shape:
    name: str
    ollama_model: str  # the model the fixture's env asks Ollama for (the stand-in serves it)


SHAPES = {s.name: s for s in (Shape("envlist-getenv", "llama3.1:8b"),
                              Shape("upper-pydantic-template", "mistral:7b-instruct"),
                              Shape("compose-include", "qwen2.5:7b"))}


@dataclass
class Stack:
    root: Path
    expected: dict
    service: str
    compose_dir: Path
    project: str  # compose project name (the test's, so leftovers are findable)
    backend_url: str
    chat_url: str
    message_field: str
    vllm_name: str
    vllm_port: int
    ollama_port: int

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", "compose", "-p", self.project, *args], cwd=self.compose_dir,
                              capture_output=True, text=True, timeout=timeout)
        assert not check or proc.returncode == 0, proc.stderr[-2000:]
        return proc

    def start_backend(self) -> None:
        self.compose("up", "-d", "--no-deps", self.service)
        if not wait_port(int(self.backend_url.rsplit(":", 1)[1]), 60):
            pytest.fail("backend did not listen: " + self.compose("logs", check=False).stdout[-3000:])

    def cli(self, *args: str):
        return run_cli("--project", str(self.root), *args)


# ---- the test's copy of a fixture ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_image():
    """The backend image with its venv first on PATH, so `uvicorn`/`python` in the fixtures resolve as written."""
    from migrator.app.harness.images import backend_image, image_exists, recipe_hash

    base = backend_image()
    dockerfile = f"FROM {base}\nENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    tag = f"graphrag-backend-path:{recipe_hash({'dockerfile': dockerfile})}"
    if not image_exists(tag):
        subprocess.run(["docker", "build", "--network", "host", "-q", "-t", tag, "-"], input=dockerfile,
                       text=True, check=True, capture_output=True)
    return tag


def _port_args(command, port: int):
    """The command with its `--port N` replaced and `--host 0.0.0.0` made loopback; (command, old port)."""
    if isinstance(command, list):
        command = list(command)
        old = int(command[command.index("--port") + 1])
        command[command.index("--port") + 1] = str(port)
        if "--host" in command:
            command[command.index("--host") + 1] = "127.0.0.1"
        return command, old
    old = int(re.search(r"--port\s+(\d+)", command).group(1))
    command = re.sub(r"--port\s+\d+", f"--port {port}", command)
    return re.sub(r"--host\s+0\.0\.0\.0", "--host 127.0.0.1", command), old


def _hostify(path: Path, backend: str, port: int, ollama_url: str, image: str, env: dict[str, str]) -> None:
    """One compose file made to run here (see the module docstring): host networking, no Ollama service."""
    data = yaml.safe_load(path.read_text())
    services = data.get("services") or {}
    dropped_volumes = set()
    for name in list(services):
        svc = services[name]
        if str(svc.get("image", "")).startswith("ollama/"):
            dropped_volumes |= {v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str)}
            del services[name]
            continue
        for key in ("ports", "networks", "depends_on"):
            svc.pop(key, None)
        svc["network_mode"] = "host"
        if "build" in svc:  # the fixture ships no Dockerfile: its code is bind-mounted into the test image
            context = svc.pop("build")
            context = context if isinstance(context, str) else context["context"]
            svc["image"] = image
            svc.setdefault("volumes", []).append(f"{context}:/app")
            svc["working_dir"] = "/app"
        image_ref = str(svc.get("image", ""))
        var = re.fullmatch(r"\$\{(\w+)(:-[^}]*)?\}", image_ref)
        if var:
            env[var.group(1)] = image  # the image stays `${VAR}`: the env file names it
        elif image_ref != image:
            svc["image"] = image
        environment = svc.get("environment")
        if isinstance(environment, dict):
            svc["environment"] = {k: str(v).replace(OLLAMA_IN_COMPOSE, ollama_url) for k, v in environment.items()}
        elif isinstance(environment, list):
            svc["environment"] = [str(v).replace(OLLAMA_IN_COMPOSE, ollama_url) for v in environment]
        if name == backend:
            svc["command"], old = _port_args(svc["command"], port)
            health = svc.get("healthcheck", {}).get("test")
            if isinstance(health, str):
                svc["healthcheck"]["test"] = health.replace(f":{old}/", f":{port}/")
    data.pop("networks", None)
    for volume in dropped_volumes & set(data.get("volumes") or {}):
        del data["volumes"][volume]
    if data.get("volumes") == {}:
        del data["volumes"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def make_stack(shape: Shape, tmp_path: Path, servers, image: str) -> Stack:
    root = tmp_path / shape.name
    shutil.copytree(PROJECTS / shape.name, root)
    expected = yaml.safe_load((root / "expected.yaml").read_text())
    (root / "expected.yaml").unlink()  # the ground truth of the fast tier, not a file of the project
    service = expected["llm_services"][0]
    ollama_port = servers.start("migrator.sim.ollama", "--preload", "--model", shape.ollama_model)
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    backend_port = free_port()
    env_values: dict[str, str] = {}
    for rel in expected["compose_files"]:
        _hostify(root / rel, service, backend_port, ollama_url, image, env_values)
    env_rel = expected["env_file"] or expected["env_template"]
    for path in root.rglob(".env*"):  # the env file, or the template the operator copies it from
        text = path.read_text().replace(OLLAMA_IN_COMPOSE, ollama_url)
        if path == root / env_rel:
            env = EnvFile.from_bytes(text.encode())
            for key, value in env_values.items():
                env = env.set(key, value)
            text = env.to_bytes().decode()
        path.write_text(text)
    chat = expected["chat_endpoint"]
    backend_url = f"http://127.0.0.1:{backend_port}"
    return Stack(root, expected, service, root / expected["compose_project_dir"],
                 f"gm-{SESSION_TAG}-{shape.name}-{uuid.uuid4().hex[:4]}", backend_url, backend_url + chat["path"],
                 chat["message_field"], f"gm-{SESSION_TAG}-vllm-{uuid.uuid4().hex[:6]}", free_port(), ollama_port)


def init(stack: Stack, sim_image: str, tmp_path: Path) -> None:
    """`init --yes` with what this box needs given as --set (written into migrate.yaml), and the gates."""
    from migrator.app.harness.model_stub import write_metadata_only

    model = write_metadata_only(tmp_path / "models" / "Qwen2.5-32B-Instruct")
    settings = {
        "project.compose_project_name": stack.project, "project.backend_url": stack.backend_url,
        "host.assume_gpu_memory": "119GiB", "host.assume_unified": "true",
        "model.id": str(model), "model.served_name": "qwen2.5-32b-instruct", "model.real_weights": "false",
        "vllm.runtime": "docker", "vllm.image": sim_image, "vllm.device": "cpu", "vllm.network_mode": "host",
        "vllm.gpu_memory_utilization": "0.76", "vllm.port": str(stack.vllm_port),
        # ChatOpenAI sends no max_tokens: the simulator then writes up to max_model_len tokens (5 ms each).
        "vllm.max_model_len": "512",
        "vllm.container_name": stack.vllm_name, "vllm.startup_timeout_s": "60", "vllm.stop_timeout_s": "5",
        "vllm.hf_cache": str(tmp_path / "hf"), "vllm.vllm_cache": str(tmp_path / "vllm-cache"),
        "ollama.url": f"http://127.0.0.1:{stack.ollama_port}", "backend.wait_s": "60",
        "deploy.staging": "off", "deploy.watch_s": "2", "deploy.probe_interval_s": "0.5",
    }
    sets = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    result = stack.cli(*sets, "init", "--yes")
    assert result.exit_code == 0, result.stderr
    written = (stack.root / "migrate.yaml").read_text()
    assert "gates:" not in written
    (stack.root / "migrate.yaml").write_text(written + GATES)


# ---- what the test reads -------------------------------------------------------------------------------
def counters(port: int) -> tuple[float, float]:
    """vLLM's completed requests and generated tokens (summed over labels), from its /metrics."""
    from migrator.core import promql

    samples = promql.parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return (promql.total(samples, "vllm:request_success_total"),
            promql.total(samples, "vllm:generation_tokens_total"))


def ask(stack: Stack, question: str = "Which entities does the graph link?") -> str:
    with httpx.stream("POST", stack.chat_url, json={stack.message_field: question}, timeout=60) as resp:
        text = "".join(resp.iter_text())
    assert resp.status_code == 200, text[-500:]
    assert text.strip(), "the backend answered with an empty body"
    return text


def user_files(root: Path) -> dict[str, bytes]:
    """tree_digest without Python's bytecode caches: the backend's interpreter (in its container, and
    phase2's run of the backend's own tests) writes `__pycache__/` beside the code it imports, stamped with
    the source's mtime — not a file of the user's, and rewritten whenever the code is reloaded."""
    return {k: v for k, v in tree_digest(root).items() if "__pycache__" not in Path(k).parts}


def steps(result) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def vllm_container(stack: Stack):
    from migrator.adapters.docker import DockerRuntime

    import docker.errors

    try:
        return DockerRuntime().client.containers.get(stack.vllm_name)
    except docker.errors.NotFound:
        return None


def teardown(stack: Stack) -> list[str]:
    """Every container the test may have started: the compose project's and vLLM's by name. What was left."""
    from migrator.adapters.docker import DockerRuntime

    docker = DockerRuntime()
    stack.compose("down", "-t", "2", "--remove-orphans", check=False)
    left = docker.remove_project(stack.project, 2)
    if docker.remove(stack.vllm_name) == "removed":
        left.append(f"{stack.vllm_name}: removed")
    return left


def assert_on_ollama(stack: Stack) -> None:
    """The backend answers, and not through vLLM: its container is gone or stopped, or its counter still."""
    container = vllm_container(stack)
    if container is not None and container.status == "running":
        before = counters(stack.vllm_port)
        ask(stack)
        assert counters(stack.vllm_port)[0] == before[0], "the backend still answers through vLLM"
    else:
        ask(stack)  # vLLM is not running: the answer can only come from the Ollama stand-in


def env_keys(stack: Stack) -> dict[str, str | None]:
    env = EnvFile.from_bytes((stack.root / stack.expected["env_file"]).read_bytes()) \
        if stack.expected["env_file"] else None
    return {k: env.get(k) if env else None for k in ("LLM_BACKEND", "VLLM_BASE_URL")}


# ---- the tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fixture_backend_migrates_to_vllm_and_rolls_back(shape, tmp_path, servers, fixture_image, sim_image):
    started = time.monotonic()
    stack = make_stack(SHAPES[shape], tmp_path, servers, fixture_image)
    template = stack.expected["env_template"] if not stack.expected["env_file"] else None
    try:
        if not template:
            stack.start_backend()  # production, on Ollama, before the migration starts
            ask(stack)
        init(stack, sim_image, tmp_path)
        before = user_files(stack.root)

        assert (r := stack.cli("phase1")).exit_code == 0, r.stderr
        assert (r := stack.cli("phase2", "--scaffold")).exit_code == 0, r.stderr
        if template:
            # Only the template is shipped: phase3 stops before writing anything and names the copy to make.
            env_rel = template.replace(".example", "")
            r = stack.cli("phase3")
            assert r.exit_code == 1 and f"cp {template} {env_rel}" in r.stderr, r.stderr
            assert not (stack.compose_dir / "docker-compose.vllm.yml").exists()
            shutil.copy(stack.root / template, stack.root / env_rel)  # what the operator does
            before[env_rel] = (stack.root / env_rel).read_bytes()  # theirs from now on
            stack.start_backend()
        r = stack.cli("phase3")
        assert r.exit_code == 0, r.stderr
        assert (stack.compose_dir / "docker-compose.vllm.yml").exists()
        served = counters(stack.vllm_port)[0]
        ask(stack)  # production still on Ollama after phase3
        assert counters(stack.vllm_port)[0] == served
        assert (r := stack.cli("bench", "--requests", "8", "--concurrency", "2", "--output-tokens", "8")).exit_code == 0, r.stderr

        served = counters(stack.vllm_port)[0]
        r = stack.cli("--json", "phase4")
        assert r.exit_code == 0, r.stderr
        proof = steps(r)["phase4.backend"]["measurements"]
        assert proof["vllm_requests_delta"] >= 1 and proof["vllm_generation_tokens_delta"] >= 1
        assert counters(stack.vllm_port)[0] >= served + proof["vllm_requests_delta"]
        assert (r := stack.cli("status")).exit_code == 0, r.stdout + r.stderr

        # A question of our own, after the switch: vLLM serves it, and its text is the answer.
        requests, tokens = counters(stack.vllm_port)
        answer = ask(stack)
        after = counters(stack.vllm_port)
        assert after[0] == requests + 1
        assert after[1] - tokens == len(answer.split()), answer  # the simulator's words are one token each

        r = stack.cli("rollback")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert user_files(stack.root) == before  # migrate.yaml (init's) stays; every other file as after init
        container = vllm_container(stack)
        assert container is None or container.status != "running"
        assert_on_ollama(stack)
        assert (r := stack.cli("status")).exit_code == 0, r.stdout + r.stderr
    finally:
        teardown(stack)
    assert vllm_container(stack) is None
    assert not _containers(stack.project)
    print(f"\n{shape}: {time.monotonic() - started:.0f} s")


def test_miswired_backend_is_refused_then_rolled_back_by_the_proof(tmp_path, servers, fixture_image, sim_image):
    """envlist-getenv without `phase2 --scaffold`: its code never reads LLM_BACKEND."""
    stack = make_stack(SHAPES["envlist-getenv"], tmp_path, servers, fixture_image)
    try:
        stack.start_backend()
        init(stack, sim_image, tmp_path)
        before = user_files(stack.root)
        assert stack.cli("phase1").exit_code == 0
        r = stack.cli("phase2")
        assert r.exit_code == 1, r.stderr  # the checks of its source fail: nothing reads LLM_BACKEND
        assert (r := stack.cli("phase3")).exit_code == 0, r.stderr
        assert (r := stack.cli("bench", "--requests", "8", "--concurrency", "2", "--output-tokens", "8")).exit_code == 0
        wired = user_files(stack.root)

        r = stack.cli("phase4")
        assert r.exit_code == 1 and "phase2 failed" in r.stderr and "--accept-failed phase2" in r.stderr, r.stderr
        assert user_files(stack.root) == wired and env_keys(stack)["LLM_BACKEND"] is None  # nothing touched

        r = stack.cli("--json", "phase4", "--accept-failed", "phase2")
        assert r.exit_code == 1, r.stderr
        said = json.loads(r.stdout)
        assert "the backend answered but vLLM served no request" in said["error"], said
        assert "rolled back automatically (back on Ollama)" in said["error"], said
        backend = Ledger(stack.root).read_state()["phases"]["phase4"]["steps"]["phase4.backend"]
        assert backend["measurements"]["vllm_requests_delta"] == 0 and backend["measurements"]["answer_status"] == 200
        assert user_files(stack.root) == before
        assert env_keys(stack) == {"LLM_BACKEND": None, "VLLM_BASE_URL": None}
        container = vllm_container(stack)
        assert container is None or container.status != "running"
        assert_on_ollama(stack)
    finally:
        teardown(stack)
    assert vllm_container(stack) is None and not _containers(stack.project)


def _containers(project: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                         capture_output=True, text=True).stdout
    return out.split()
