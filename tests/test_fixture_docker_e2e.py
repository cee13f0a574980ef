"""The fixture projects' own backends (FastAPI + LangChain, their code) migrated under real Docker compose
(issue #13): `init --yes` → phase1 → `phase2 --scaffold` → phase3 → bench → phase4 → status → rollback on a
temp copy of every shape in tests/projects/ —
- `envlist-getenv` (env only through an `environment:` list with `${VAR}` interpolation, `os.getenv`
  constants, `/api/chat`, `/healthz`, code bind-mounted into `image: ${API_IMAGE}`),
- `upper-pydantic-template` (UPPERCASE case-sensitive pydantic fields, only `docker/.env.example` shipped:
  the test makes the `cp` phase3 names, as the operator would),
- `compose-include` (a top-level file that only `include:`s per-service files, an `environment:` map,
  dataclass settings),
- `completion-pipfile` (`OllamaLLM` completion objects: on vLLM LangChain's `OpenAI` calls /v1/completions;
  `env_file: ./config/backend.env`, alias-named pydantic fields),
- `existing-vllm` (an unused `vllm` service of the user's own already in the compose file: init moves
  `vllm.service_name` off it, phase3's user-vllm check passes, and that service is never started or touched),
- `poetry-v1-prefix` (pydantic-1 `BaseSettings` with `APP_`, `--app-dir src`, SSE `/query`: the answer is the
  events' tokens),
- `provider-switch` (the project's own `LLM_PROVIDER` table stays `ollama`, `LLM_BACKEND` picks vLLM inside its
  ollama branch; non-streaming JSON `/v1/ask`: the answer is its `answer`),
- `py312-dockerfile` (3.12-only syntax, Ollama on the Docker host, no `command:` — its Dockerfile's `CMD`),
- `root-multi-service` (`compose.yaml` + `compose.override.yaml`, two LLM services: the `api`, and a `worker`
  with no HTTP — proven by dropping a document in its inbox and reading the summary it writes: vLLM's counters
  rise by that summary after the switch, and after rollback it is written with vLLM stopped), no `/health`,
- `unittest-suite` (the backend's own tests are `unittest`: phase2 runs them and the scaffolded TestCase).
phase4's proof must pass because vLLM served the question (its counters rose), the backend then answers a
direct question with vLLM's text, and after rollback the backend answers from the Ollama stand-in again, every
user file is byte-identical to after init, no container is left and `status` exits 0. A mis-wired variant
(envlist-getenv without `--scaffold`: the backend's code never reads LLM_BACKEND) is refused by phase4 naming
phase2, and switched with `--accept-failed phase2` it fails the proof (vLLM's counters do not rise) and rolls
back by itself. Each shape prints its wall time and each command's (`-s` shows them).

What the test changes in its copy, and why. The test dockerd runs with `--bridge=none` and test traffic goes
to loopback only (never to a Docker bridge address), so every container uses host networking:
- each LLM service of the fixture's compose files gets `network_mode: host`; its `ports:`, `networks:`,
  `depends_on:` and `extra_hosts:` go, as do the top-level `networks:` (compose cannot join a bridge here);
  the user's other services (existing-vllm's own vLLM) stay exactly as written — nothing starts them;
- the port in the backend's command (and its healthcheck's URL) becomes a free port, `--host 0.0.0.0` becomes
  `127.0.0.1` (on the host's network 0.0.0.0 would listen on every interface);
- the fixture's Ollama service (`ollama/ollama`, or the one expected.yaml names — root-multi-service's
  override re-declares it without an image) and its volume go: no image registry is reachable, and the Ollama
  stand-in runs as a process on 127.0.0.1 — every `http://ollama:11434` and `http://host.docker.internal:11434`
  in the env files and compose files points at it instead;
- the backend runs the fixture's own code, bind-mounted, in the test's backend image (python 3.11, FastAPI,
  uvicorn, pydantic-settings, langchain-ollama, langchain-openai: every fixture requirement here) with
  `/opt/venv/bin` on PATH, so the fixtures' own `uvicorn …` commands and `python -c …` healthchecks run as
  written: `${API_IMAGE}` is set in envlist-getenv's `.env`, a literal image is replaced, and a `build:`
  (the fixtures' Dockerfiles are not built: no registry for their `FROM`) becomes that image with the build
  context bind-mounted and `working_dir` set; py312-dockerfile, which has no `command:`, gets its Dockerfile's
  `CMD`;
- py312-dockerfile's code does not parse on the image's 3.11. It is served by the interpreter that parses it:
  the cached 3.12 venv of `backend_venv` (pyenv's 3.12 plus the backend's packages, fastapi and uvicorn
  included; keyed by a hash of interpreter and requirements, built once in ~20 s) and pyenv's 3.12 prefix it
  points at, both bind-mounted read-only at their own paths (this host and the image are the same Debian, so
  its shared libraries match), the command `<venv>/bin/python -m uvicorn …`. A 3.12 image would need pyenv's
  300 MB prefix copied into a build context and an image per prefix change: the mounts cost nothing and are
  cached with the venv. `backend.python` is that venv's python, as init writes it when a python3.12 is on PATH
  (here pyenv's shim for it fails): phase2 parses the code and runs its tests with it;
- values of a fixture's env file changed for this box: root-multi-service's `SUMMARY_INTERVAL_S` (0.5, not 30:
  the worker's poll), existing-vllm's `MAX_TOKENS` (24, not 512 — the vLLM here has `max_model_len` 512 to keep
  the simulator's answers short, and that backend keeps a session's history: with 512-token answers phase4's
  multi-turn check overflows the context on its third turn, which the tool rightly reports and rolls back).
How env reaches the service (`environment:` list or map with `${VAR}`, `env_file:`), the settings style, the
code and the compose layout (`include:`, `docker/`, overrides) stay as the fixture has them. Reachability by
service name on a bridge network is covered by the fast tier (`tests/test_phase3_wiring.py`, through `docker
compose config`). migrate.yaml is init's, plus what this box needs as `--set` (the vLLM simulator's image as
vLLM, host networking, free ports, the stand-ins' URLs, a short watch, no staging — the fixtures' backends
listen on a fixed port, which staging's second backend on the host network could not share —, a 3 s stop
grace at the recreates, and gates a CPU can pass), and the Ollama stand-in answers at 2 ms a token.

Where a shape's time goes (measured here, 2 cores shared with other test sessions, load 4-9): 67-102 s a
shape — phase2 17-41 s (the backend's suite, then the switch test alone on the wired and the un-wired tree:
three pytest runs importing LangChain, and the streamed ChatOpenAI check), phase3 ~13 s (10 of them are the
rendered healthcheck's first `interval` that `up --wait` waits for), phase4 15-25 s (promtool, the drain, the
recreate and the backend's boot, the proof, the 2 s watch and the checks through the backend), rollback 4-12 s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import SESSION_TAG, run_cli, tree_digest
from migrator.adapters.net import free_port, wait_port
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile

pytestmark = [pytest.mark.docker, pytest.mark.chain]

PROJECTS = Path(__file__).resolve().parent / "projects"
OLLAMA_URLS = ("http://ollama:11434", "http://host.docker.internal:11434")
GATES = (  # CPU and a simulator: the gates' plumbing is under test, not this machine's speed
    "gates:\n"
    "  - {name: speed, metric: per_user_output_tokens_per_s, op: '>', threshold: 0}\n"
    "  - {name: errors, metric: error_rate, op: '<=', threshold: 0}\n"
    "  - {name: prod errors, metric: error_rate, op: '<', threshold: 0.05, source: metrics}\n")


@dataclass
class Shape:
    name: str
    ollama_model: str  # the model the fixture's env asks Ollama for (the stand-in serves it)
    env: tuple[tuple[str, str], ...] = ()  # values of the fixture's env file changed for this box (see above)
    python: str | None = None  # a Python version the test's image lacks: served by a bind-mounted venv
    worker: tuple[str, str] | None = None  # a second LLM service without HTTP: (service, its inbox directory)


SHAPES = {s.name: s for s in (
    Shape("envlist-getenv", "llama3.1:8b"),
    Shape("upper-pydantic-template", "mistral:7b-instruct"),
    Shape("compose-include", "qwen2.5:7b"),
    Shape("completion-pipfile", "llama3.1:8b-instruct-q4_K_M"),
    Shape("existing-vllm", "qwen2.5:14b", env=(("MAX_TOKENS", "24"),)),
    Shape("poetry-v1-prefix", "mistral:7b-instruct"),
    Shape("provider-switch", "qwen2.5:14b-instruct"),
    Shape("py312-dockerfile", "gemma2:9b", python="3.12"),
    Shape("root-multi-service", "llama3.1:8b", env=(("SUMMARY_INTERVAL_S", "0.5"),),
          worker=("worker", "/data/inbox")),
    Shape("unittest-suite", "llama3.1:8b"),
)}


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
    timings: list = field(default_factory=list)  # (command, seconds): where a shape's wall time goes

    def compose(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(["docker", "compose", "-p", self.project, *args], cwd=self.compose_dir,
                              capture_output=True, text=True, timeout=timeout)
        assert not check or proc.returncode == 0, proc.stderr[-2000:]
        return proc

    def start_backend(self) -> None:
        """Every service that calls the LLM (root-multi-service's worker too), as production runs them."""
        self.compose("up", "-d", "--no-deps", *self.expected["llm_services"])
        if not wait_port(int(self.backend_url.rsplit(":", 1)[1]), 60):
            pytest.fail("backend did not listen: " + self.compose("logs", check=False).stdout[-3000:])

    def cli(self, *args: str):
        started = time.monotonic()
        try:
            return run_cli("--project", str(self.root), *args)
        finally:
            verb = next(a for a in args if not a.startswith("-") and "=" not in a)
            self.timings.append((verb, time.monotonic() - started))


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


def _dockerfile_cmd(context: Path) -> list[str] | None:
    """The exec-form CMD of the fixture's Dockerfile, if it ships one (what its own image would run)."""
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        return None
    found = re.findall(r"^CMD\s+(\[.*\])\s*$", dockerfile.read_text(), re.M)
    return json.loads(found[-1]) if found else None


def _hostify(path: Path, expected: dict, port: int, ollama_url: str, image: str, env: dict[str, str],
             python: Path | None = None) -> None:
    """One compose file made to run here (see the module docstring): host networking, no Ollama service."""
    data = yaml.safe_load(path.read_text())
    services = data.get("services") or {}
    llm, backend = set(expected["llm_services"]), expected["llm_services"][0]
    dropped_volumes = set()
    for name in list(services):
        svc = services[name] or {}
        if name == expected["ollama"]["service"] or str(svc.get("image", "")).startswith("ollama/"):
            dropped_volumes |= {v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str)}
            del services[name]
            continue
        if name not in llm:
            continue  # the user's other services (existing-vllm's unused vLLM) stay as they are: never started
        for key in ("ports", "networks", "depends_on", "extra_hosts"):
            svc.pop(key, None)
        svc["network_mode"] = "host"
        if "build" in svc:  # the fixture's Dockerfile (if any) is not built: its code is bind-mounted
            context = svc.pop("build")
            context = context if isinstance(context, str) else context["context"]
            svc["image"] = image
            svc.setdefault("volumes", []).append(f"{context}:/app")
            svc["working_dir"] = "/app"
            if "command" not in svc and name == backend:
                svc["command"] = _dockerfile_cmd((path.parent / context).resolve())
        image_ref = str(svc.get("image", ""))
        var = re.fullmatch(r"\$\{(\w+)(:-[^}]*)?\}", image_ref)
        if var:
            env[var.group(1)] = image  # the image stays `${VAR}`: the env file names it
        elif image_ref != image:
            svc["image"] = image
        environment = svc.get("environment")
        if isinstance(environment, dict):
            svc["environment"] = {k: _local_ollama(str(v), ollama_url) for k, v in environment.items()}
        elif isinstance(environment, list):
            svc["environment"] = [_local_ollama(str(v), ollama_url) for v in environment]
        if name == backend and "command" in svc:
            svc["command"], old = _port_args(svc["command"], port)
            health = svc.get("healthcheck", {}).get("test")
            if isinstance(health, str):
                svc["healthcheck"]["test"] = health.replace(f":{old}/", f":{port}/")
            if python is not None:  # the interpreter that parses the code, bind-mounted where its venv expects it
                command = svc["command"] if isinstance(svc["command"], list) else svc["command"].split()
                assert command[0] == "uvicorn", command
                svc["command"] = [str(python), "-m", *command]
                venv = python.parent.parent
                home = Path(re.search(r"^home\s*=\s*(.+)$", (venv / "pyvenv.cfg").read_text(), re.M)
                            .group(1).strip()).parent
                svc["volumes"] += [f"{venv}:{venv}:ro", f"{home}:{home}:ro"]
    data.pop("networks", None)
    for volume in dropped_volumes & set(data.get("volumes") or {}):
        del data["volumes"][volume]
    if data.get("volumes") == {}:
        del data["volumes"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _local_ollama(text: str, ollama_url: str) -> str:
    """Every URL the fixture gives for its Ollama (a compose service, or the Docker host) → the stand-in's."""
    for url in OLLAMA_URLS:
        text = text.replace(url, ollama_url)
    return text


def make_stack(shape: Shape, tmp_path: Path, servers, image: str, python: Path | None = None) -> Stack:
    root = tmp_path / shape.name
    shutil.copytree(PROJECTS / shape.name, root)
    expected = yaml.safe_load((root / "expected.yaml").read_text())
    (root / "expected.yaml").unlink()  # the ground truth of the fast tier, not a file of the project
    service = expected["llm_services"][0]
    # The stand-in's default pace is a GPU's (120 ms TTFT, 40 ms a token, 128 tokens: ~5 s an answer, one at a
    # time); the chain asks Ollama 4-6 times a shape. What is proven is which LLM answered, not how fast.
    ollama_port = servers.start("migrator.sim.ollama", "--preload", "--model", shape.ollama_model,
                                "--ttft-ms", "20", "--itl-ms", "2")
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    backend_port = free_port()
    env_values: dict[str, str] = dict(shape.env)
    for rel in expected["compose_files"]:
        _hostify(root / rel, expected, backend_port, ollama_url, image, env_values, python)
    env_rel = expected["env_file"] or expected["env_template"]
    for path in root.rglob(".env*"):  # the env file, or the template the operator copies it from
        text = _local_ollama(path.read_text(), ollama_url)
        if path == root / env_rel:
            env = EnvFile.from_bytes(text.encode())
            for key, value in env_values.items():
                env = env.set(key, value)
            text = env.to_bytes().decode()
        path.write_text(text)
    if expected["env_file"] and not (root / env_rel).name.startswith(".env"):  # completion-pipfile's backend.env
        env = EnvFile.from_bytes(_local_ollama((root / env_rel).read_text(), ollama_url).encode())
        for key, value in env_values.items():
            env = env.set(key, value)
        (root / env_rel).write_bytes(env.to_bytes())
    chat = expected["chat_endpoint"]
    backend_url = f"http://127.0.0.1:{backend_port}"
    return Stack(root, expected, service, root / expected["compose_project_dir"],
                 f"gm-{SESSION_TAG}-{shape.name}-{uuid.uuid4().hex[:4]}", backend_url, backend_url + chat["path"],
                 chat["message_field"], f"gm-{SESSION_TAG}-vllm-{uuid.uuid4().hex[:6]}", free_port(), ollama_port)


def init(stack: Stack, sim_image: str, tmp_path: Path, python: Path | None = None) -> None:
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
        # The old container's SIGTERM→SIGKILL grace at a recreate (30 s): root-multi-service's worker is PID 1
        # with no SIGTERM handler, so the kernel ignores the signal and each recreate waited the full grace.
        # Nothing is in flight at these recreates (the drain before them is still measured).
        "deploy.stop_grace_s": "3",
    }
    if python is not None:  # no python3.12 on PATH here (init would write it): the venv that serves the code
        settings["backend.python"] = str(python)
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
    """The backend's answer as its user reads it: plain streamed text, the tokens of its SSE events
    (poetry-v1-prefix's `data: {"token": …}`), or the one string of its JSON reply (provider-switch)."""
    with httpx.stream("POST", stack.chat_url, json={stack.message_field: question}, timeout=60) as resp:
        text = "".join(resp.iter_text())
    assert resp.status_code == 200, text[-500:]
    kind = resp.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        events = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = "".join(_only_string(json.loads(e)) for e in events if e != "[DONE]")
    elif kind.startswith("application/json"):
        text = _only_string(json.loads(text))
    assert text.strip(), "the backend answered with an empty body"
    return text


def _only_string(obj) -> str:
    strings = [v for v in obj.values() if isinstance(v, str)] if isinstance(obj, dict) else []
    assert len(strings) == 1, obj
    return strings[0]


def summarise(stack: Stack, worker: str, inbox: str) -> str:
    """root-multi-service's worker: a document dropped into its inbox, its summary read back (what the
    worker's LLM wrote) — the second LLM service proven, not just recreated."""
    name = uuid.uuid4().hex[:8]
    stack.compose("exec", "-T", worker, "python", "-c",
                  f"open('{inbox}/{name}.txt', 'w').write('Ada Lovelace wrote the first program.')")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = stack.compose("exec", "-T", worker, "cat", f"{inbox}/{name}.summary", check=False)
        if done.returncode == 0:
            assert done.stdout.strip(), "the worker wrote an empty summary"
            return done.stdout
        time.sleep(0.3)
    pytest.fail("the worker wrote no summary: " + stack.compose("logs", worker, check=False).stdout[-3000:])


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
    stack.compose("down", "-v", "-t", "2", "--remove-orphans", check=False)  # -v: the project's own volumes
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
def test_fixture_backend_migrates_to_vllm_and_rolls_back(shape, tmp_path, servers, fixture_image, sim_image,
                                                         request):
    started = time.monotonic()
    spec = SHAPES[shape]
    python = Path(request.getfixturevalue("py312_python")) if spec.python else None
    stack = make_stack(spec, tmp_path, servers, fixture_image, python)
    template = stack.expected["env_template"] if not stack.expected["env_file"] else None
    try:
        if not template:
            stack.start_backend()  # production, on Ollama, before the migration starts
            ask(stack)
        init(stack, sim_image, tmp_path, python)
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
        if stack.expected["existing_vllm_service"]:  # the user's own `vllm` service: named around, never started
            ours = yaml.safe_load((stack.root / "migrate.yaml").read_text())["vllm"]["service_name"]
            assert ours != "vllm" and f"service '{ours}'" in r.stderr, r.stderr
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
        if spec.worker:  # the other LLM service too: its summary is vLLM's text
            summary = summarise(stack, *spec.worker)
            assert counters(stack.vllm_port) == (after[0] + 1, after[1] + len(summary.split())), summary

        if stack.expected["existing_vllm_service"]:
            assert not stack.compose("ps", "-a", "-q", "vllm").stdout.strip(), "the user's own vllm was started"

        r = stack.cli("rollback")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert user_files(stack.root) == before  # migrate.yaml (init's) stays; every other file as after init
        container = vllm_container(stack)
        assert container is None or container.status != "running"
        assert_on_ollama(stack)
        if spec.worker:
            summarise(stack, *spec.worker)  # vLLM is stopped: only the Ollama stand-in can have written it
        assert (r := stack.cli("status")).exit_code == 0, r.stdout + r.stderr
    finally:
        teardown(stack)
    assert vllm_container(stack) is None
    assert not _containers(stack.project)
    print(f"\n{shape}: {time.monotonic() - started:.0f} s ("
          + ", ".join(f"{verb} {seconds:.1f}" for verb, seconds in stack.timings) + ")")


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
