"""phase3 wires vLLM where the backend can reach it (issue #13): on the LLM services' networks, with the env
keys delivered the way each service gets its env, refused beside a vLLM of the user's own, under profiles, and
judged before anything starts by the merged `docker compose config` (the compose CLI only: no daemon is used —
DOCKER_HOST points nowhere, so the step that would start vLLM stops at its confirmation)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from migrator.core.errors import ExitCode
from migrator.files.envfile import EnvFile

PROJECTS = Path(__file__).resolve().parent / "projects"
SHAPES = sorted(p.parent.name for p in PROJECTS.glob("*/expected.yaml"))
NO_DAEMON = {"DOCKER_HOST": "unix:///nonexistent/graphrag-migrate-test.sock"}


def fixture(shape: str, tmp_path: Path, init: bool = True) -> Path:
    """A copy of the fixture, its env file made from the template where only one is shipped, then `init`."""
    from conftest import run_cli

    root = tmp_path / shape
    shutil.copytree(PROJECTS / shape, root)
    expected = yaml.safe_load((root / "expected.yaml").read_text())
    if expected["env_template"] and not expected["env_file"]:
        shutil.copy(root / expected["env_template"], root / expected["env_template"].replace(".example", ""))
    if init:
        result = run_cli("init", "--project", str(root), "--yes")
        assert result.exit_code == 0, result.stderr
    return root


def steps(result) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads(result.stdout)["steps"]}


def dry_run(cli, root: Path, *extra: str) -> tuple[object, dict[str, dict]]:
    result = cli("--project", str(root), "--json", *extra, "phase3", "--dry-run", env=NO_DAEMON)
    return result, steps(result)


def write_files(cli, root: Path, *extra: str):
    """phase3 up to the step that would start vLLM: every file written and `config -q` run; then it stops,
    since that step needs confirmation and stdin is no terminal."""
    from migrator.core.ledger import Ledger

    result = cli("--project", str(root), *extra, "phase3", "--confirm", env=NO_DAEMON)
    assert result.exit_code == ExitCode.CHECK_FAILED and "needs confirmation" in result.stderr, result.stderr
    return Ledger(root).read_state()["phases"]["phase3"]["steps"]


def switched(root: Path) -> dict[str, str]:
    """The env file as phase3's env step and phase4's switch leave it (LLM_BACKEND=vllm and vLLM's endpoint)."""
    from migrator.app.api import context
    from phases.phase3 import desired_env

    ctx = context(root)
    want = desired_env(ctx)
    env = EnvFile.from_bytes(ctx.env_path.read_bytes())
    for key, value in want.items():
        env = env.set(key, value)
    ctx.env_path.write_bytes(env.to_bytes())
    return want


def compose_as_the_user_runs_it(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`docker compose` in the compose directory without -f: the files come from COMPOSE_FILE in the env file."""
    from migrator.app.api import context

    ctx = context(root)
    return subprocess.run(["docker", "compose", "--env-file", str(ctx.env_path), *args], cwd=ctx.compose_path.parent,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_fixture_shape_after_init_gets_a_vllm_its_llm_services_reach(shape, tmp_path, cli):
    root = fixture(shape, tmp_path)
    expected = yaml.safe_load((root / "expected.yaml").read_text())
    before = {f: (root / f).read_bytes() for f in expected["compose_files"]}
    done = write_files(cli, root)
    assert done["phase3.user-vllm"]["status"] == "passed", done["phase3.user-vllm"]
    assert done["phase3.reachable"]["status"] == "passed", done["phase3.reachable"]
    assert done["phase3.compose-config"]["status"] == "passed", done["phase3.compose-config"]
    assert {f: (root / f).read_bytes() for f in expected["compose_files"]} == before  # the user's, untouched

    want = switched(root)
    merged = compose_as_the_user_runs_it(root, "--profile", "*", "config", "--format", "json")
    assert merged.returncode == 0, merged.stderr
    services = json.loads(merged.stdout)["services"]
    vllm = next(spec for spec in services.values() if (spec.get("labels") or {}).get("org.graphrag-migrate.managed"))
    host = want["VLLM_BASE_URL"].split("//")[1].split(":")[0]
    assert host == vllm["container_name"]  # the default URL names vLLM's container
    for name in expected["llm_services"]:
        env = services[name]["environment"]
        assert {k: env.get(k) for k in want} == want, name  # what the backend reads after phase4's switch
        assert set(services[name].get("networks") or {"default": None}) & set(vllm["networks"]), name


def test_a_forced_network_the_backend_is_not_on_fails_naming_its_networks_line(tmp_path, cli):
    root = fixture("envlist-getenv", tmp_path)
    result, got = dry_run(cli, root, "--set", "project.network=graphrag-network")
    step = got["phase3.reachable"]
    line = (root / "docker-compose.yml").read_text().splitlines().index("    networks:") + 1
    assert result.exit_code == ExitCode.CHECK_FAILED and step["status"] == "failed"
    assert "api is on net, vLLM on graphrag-network" in step["message"]
    assert "remove project.network (graphrag-network)" in step["fix"] and f"docker-compose.yml:{line}" in step["fix"]
    assert got["phase3.reachable"]["status"] == "failed" and dry_run(cli, root)[1]["phase3.reachable"]["status"] \
        == "satisfied"  # without the override vLLM joins net


def test_a_hard_coded_llm_backend_in_the_users_environment_list_fails_naming_the_line(tmp_path, cli):
    root = fixture("envlist-getenv", tmp_path)
    compose = root / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("      - LOG_LEVEL=${LOG_LEVEL:-info}\n",
                                                   "      - LOG_LEVEL=${LOG_LEVEL:-info}\n      - LLM_BACKEND=ollama\n"))
    line = compose.read_text().splitlines().index("      - LLM_BACKEND=ollama") + 1
    result, got = dry_run(cli, root)
    step = got["phase3.reachable"]
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert f"sets LLM_BACKEND=ollama at docker-compose.yml:{line}, which wins over .env" in step["message"]
    assert "`- LLM_BACKEND=${LLM_BACKEND:-ollama}`" in step["fix"]
    rendered = yaml.safe_load(next(d["diff"] for d in json.loads(result.stdout)["diffs"]
                                   if d["file"] == "docker-compose.vllm.yml").replace("\n+", "\n")
                              .split("\n", 3)[3])
    assert "LLM_BACKEND" not in rendered["services"]["api"]["environment"]  # the user's key is never overridden


def test_a_hard_coded_key_in_an_included_files_mapping_is_found_in_that_file(tmp_path, cli):
    root = fixture("compose-include", tmp_path)
    part = root / "services" / "backend.compose.yml"
    part.write_text(part.read_text().replace("      OLLAMA_URL: http://ollama:11434\n",
                                             "      OLLAMA_URL: http://ollama:11434\n      VLLM_BASE_URL: http://x:1/v1\n"))
    line = part.read_text().splitlines().index("      VLLM_BASE_URL: http://x:1/v1") + 1
    step = dry_run(cli, root)[1]["phase3.reachable"]
    assert f"sets VLLM_BASE_URL=http://x:1/v1 at services/backend.compose.yml:{line}" in step["message"]
    assert "`VLLM_BASE_URL: ${VLLM_BASE_URL:-}`" in step["fix"]


def test_a_base_url_host_that_names_no_service_fails(tmp_path, cli):
    root = fixture("poetry-v1-prefix", tmp_path)
    step = dry_run(cli, root, "--set", "vllm.backend_base_url=http://llm-box:8000/v1")[1]["phase3.reachable"]
    assert step["status"] == "failed" and "'llm-box' is not vLLM's service name, container_name or alias on graphnet" \
        in step["message"]
    assert "vllm.backend_base_url: http://graphrag-vllm:8000/v1" in step["fix"]
    assert dry_run(cli, root, "--set", "vllm.backend_base_url=http://vllm:8000/v1")[1]["phase3.reachable"]["status"] \
        == "satisfied"  # the service name resolves too


def test_an_existing_vllm_service_stops_phase3_before_it_writes_anything(tmp_path, cli):
    from conftest import tree_digest
    from migrator.core.ledger import Ledger

    root = fixture("existing-vllm", tmp_path, init=False)
    (root / "migrate.yaml").write_text("project:\n  compose_file: docker/docker-compose.yml\n  env_file: docker/.env\n")
    before = tree_digest(root)
    result = cli("--project", str(root), "phase3", env=NO_DAEMON)
    step = Ledger(root).read_state()["phases"]["phase3"]["steps"]["phase3.user-vllm"]
    assert result.exit_code == ExitCode.CHECK_FAILED and step["status"] == "failed"
    assert "service 'vllm' at docker/docker-compose.yml:23" in step["message"]
    assert "vllm.service_name and vllm.container_name in migrate.yaml" in step["fix"] and "rename" in step["fix"]
    assert {k: v for k, v in tree_digest(root).items() if not k.startswith(".graphrag-migrate")} == before


def test_a_vllm_image_under_another_name_stops_phase3_until_the_names_are_chosen(tmp_path, cli):
    root = fixture("existing-vllm", tmp_path, init=False)
    compose = root / "docker" / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("  vllm:\n", "  llm-experiment:\n"))
    (root / "migrate.yaml").write_text("project:\n  compose_file: docker/docker-compose.yml\n  env_file: docker/.env\n"
                                       "vllm:\n  port: 8002\n")
    step = dry_run(cli, root)[1]["phase3.user-vllm"]
    assert step["status"] == "failed" and "service 'llm-experiment'" in step["message"]
    assert "image vllm/vllm-openai:v0.8.5" in step["message"]
    chosen = dry_run(cli, root, "--set", "vllm.service_name=graphrag-vllm")[1]["phase3.user-vllm"]
    assert chosen["status"] == "satisfied"


def test_a_container_name_clash_is_refused(tmp_path, cli):
    root = fixture("provider-switch", tmp_path)
    compose = root / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("    image: ollama/ollama:0.6.2\n",
                                                   "    image: ollama/ollama:0.6.2\n    container_name: graphrag-vllm\n"))
    step = dry_run(cli, root)[1]["phase3.user-vllm"]
    assert step["status"] == "failed" and "service 'ollama'" in step["message"]
    assert "container_name is vllm.container_name (graphrag-vllm)" in step["message"]


def test_inline_cannot_add_the_env_keys_and_names_the_lines_to_add(tmp_path, cli):
    root = fixture("envlist-getenv", tmp_path)
    step = dry_run(cli, root, "--set", "vllm.runtime=docker")[1]
    assert step["phase3.reachable"]["status"] == "satisfied"
    inline = cli("--project", str(root), "--json", "phase3", "--inline", "--dry-run", env=NO_DAEMON)
    reach = steps(inline)["phase3.reachable"]
    line = (root / "docker-compose.yml").read_text().splitlines().index("    environment:") + 1
    assert reach["status"] == "failed" and "api gets no VLLM_BASE_URL" in reach["message"]
    assert f"add `- VLLM_BASE_URL=${{VLLM_BASE_URL:-}}` under environment: at docker-compose.yml:{line}" in reach["fix"]
    assert "drop --inline" in reach["fix"]


def test_a_value_exported_in_the_shell_is_caught_since_compose_prefers_it(tmp_path, cli, monkeypatch):
    root = fixture("envlist-getenv", tmp_path)
    monkeypatch.setenv("LLM_BACKEND", "ollama")
    step = dry_run(cli, root)[1]["phase3.reachable"]
    assert step["status"] == "failed" and "api would get LLM_BACKEND='ollama', not 'vllm'" in step["message"]
    assert "this shell exports it" in step["message"] and "unset LLM_BACKEND" in step["fix"]


MULTI_NET = """\
services:
  api:
    image: api:1
    env_file: app.env
    networks: [front, shared]
  worker:
    image: api:1
    networks: [jobs]
    environment:
      - QUEUE=${QUEUE:-q}
  ollama:
    image: ollama/ollama:0.6.8
    networks: [shared, jobs]
networks:
  front: {}
  jobs:
    driver: bridge
  shared:
    external: true
    name: graphrag-shared-net
"""


def project(tmp_path: Path, compose: str, config: str = "", env: str = "QUEUE=q\n") -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "docker-compose.yml").write_text(compose)
    (root / "app.env").write_text(env)
    (root / "migrate.yaml").write_text("project:\n  compose_file: docker-compose.yml\n  env_file: app.env\n" + config)
    return root


def test_vllm_joins_every_network_of_the_llm_services_keeping_an_external_ones_name(tmp_path, cli):
    root = project(tmp_path, MULTI_NET, "  backend_service: api\n  llm_services: [api, worker]\n")
    done = write_files(cli, root)
    assert done["phase3.reachable"]["status"] == "passed", done["phase3.reachable"]
    written = yaml.safe_load((root / "docker-compose.vllm.yml").read_text())
    assert written["services"]["vllm"]["networks"] == ["front", "shared", "jobs"]
    assert set(written["services"]["worker"]["environment"]) == {"LLM_BACKEND", "VLLM_BASE_URL", "VLLM_MODEL"}
    # its env_file is the env file: the keys reach it from there; only its grace period for the recreate
    assert written["services"]["api"] == {"stop_grace_period": "30s"}
    want = switched(root)
    model = json.loads(compose_as_the_user_runs_it(root, "config", "--format", "json").stdout)
    assert model["networks"]["shared"] == {"name": "graphrag-shared-net", "external": True, "ipam": {}} or \
        (model["networks"]["shared"]["name"], model["networks"]["shared"]["external"]) == ("graphrag-shared-net", True)
    assert model["networks"]["jobs"]["driver"] == "bridge"  # the user's definition, merged, not replaced
    assert {k: model["services"]["worker"]["environment"][k] for k in want} == want
    assert model["services"]["worker"]["environment"]["QUEUE"] == "q"


def test_without_llm_services_a_worker_on_its_own_network_is_not_wired(tmp_path, cli):
    root = project(tmp_path, MULTI_NET, "  backend_service: api\n")
    step = dry_run(cli, root)[1]["phase3.reachable"]
    assert step["status"] == "satisfied" and "worker" not in step["message"]
    forced = dry_run(cli, root, "--set", "project.llm_services=api worker", "--set", "project.network=front")[1]
    assert "worker is on jobs, vLLM on front: no network in common" in forced["phase3.reachable"]["message"]


def test_unknown_llm_service_is_named(tmp_path, cli):
    root = project(tmp_path, MULTI_NET, "  backend_service: api\n  llm_services: [api, summariser]\n")
    step = dry_run(cli, root)[1]["phase3.reachable"]
    assert step["status"] == "failed" and "service 'summariser'" in step["message"]


HOST_NET = """\
services:
  backend:
    image: b:1
    env_file: app.env
    network_mode: host
"""


def test_a_host_networked_backend_reaches_vllm_on_loopback(tmp_path, cli):
    root = project(tmp_path, HOST_NET)
    result, got = dry_run(cli, root)
    assert got["phase3.reachable"]["message"] == "backend (host networking) reaches vLLM at http://127.0.0.1:8001/v1"
    env_diff = next(d["diff"] for d in json.loads(result.stdout)["diffs"] if d["file"] == "app.env")
    assert "+VLLM_BASE_URL=http://127.0.0.1:8001/v1" in env_diff
    bad = dry_run(cli, root, "--set", "vllm.backend_base_url=http://graphrag-vllm:8000/v1")[1]["phase3.reachable"]
    assert bad["status"] == "failed" and "uses network_mode: host (docker-compose.yml:5)" in bad["message"]


PROFILED = """\
services:
  backend:
    image: b:1
    env_file: app.env
    profiles: [llm]
  ollama:
    image: ollama/ollama:0.6.8
    profiles: [llm]
  db:
    image: neo4j:5
"""


def test_a_backend_in_a_profile_is_wired_and_vllm_comes_up_with_that_profile(tmp_path, cli):
    root = project(tmp_path, PROFILED)
    done = write_files(cli, root)
    assert done["phase3.reachable"]["status"] == "passed", done["phase3.reachable"]
    assert yaml.safe_load((root / "docker-compose.vllm.yml").read_text())["services"]["vllm"]["profiles"] == ["llm"]
    with_profile = compose_as_the_user_runs_it(root, "--profile", "llm", "config", "--services").stdout.split()
    assert {"backend", "vllm", "db"} <= set(with_profile)
    assert set(compose_as_the_user_runs_it(root, "config", "--services").stdout.split()) == {"db"}
    # the tool names its services (`up -d --wait vllm`, the backend's recreate): a named service's profile is on
    from migrator.adapters.runtime.compose import project_compose
    from migrator.app.api import context

    named = project_compose(context(root), [root / "docker-compose.vllm.yml"]).run("config", "--format", "json",
                                                                                   "vllm", "backend")
    assert named.returncode == 0 and set(json.loads(named.stdout)["services"]) == {"vllm", "backend"}, named.stderr


def test_a_vllm_process_is_unreachable_from_a_bridged_backend_and_the_check_says_how(tmp_path, cli):
    root = fixture("envlist-getenv", tmp_path)
    step = dry_run(cli, root, "--set", "vllm.runtime=process")[1]["phase3.reachable"]
    assert step["status"] == "failed"
    assert "api runs in a container: http://127.0.0.1:8001/v1 does not reach this host's vLLM process" in step["message"]
    assert "host.docker.internal:host-gateway" in step["fix"] and "vllm.host: 0.0.0.0" in step["fix"]
    assert "api gets no VLLM_BASE_URL" in step["message"]  # no file of phase3's adds the keys for a process


def test_a_vllm_process_is_reached_by_a_host_networked_backend(tmp_path, cli):
    root = project(tmp_path, HOST_NET)
    step = dry_run(cli, root, "--set", "vllm.runtime=process")[1]["phase3.reachable"]
    assert step["status"] == "satisfied"
    assert step["message"] == "backend (host networking) reaches the vLLM process at http://127.0.0.1:8001/v1"


ENV_ONLY = """\
services:
  backend:
    image: b:1
    environment:
      OLLAMA_URL: http://ollama:11434
"""


def test_the_keys_are_interpolated_from_the_env_file_the_tool_passes_not_the_directorys_dot_env(tmp_path, cli):
    """project.env_file is not the compose directory's .env: the tool's compose runs take `--env-file`, so
    the keys phase3 adds come from project.env_file (the check and every command the tool runs agree)."""
    root = project(tmp_path, ENV_ONLY)
    (root / ".env").write_text("VLLM_BASE_URL=http://decoy:1/v1\nLLM_BACKEND=decoy\n")
    done = write_files(cli, root)
    assert done["phase3.reachable"]["status"] == "passed", done["phase3.reachable"]
    want = switched(root)
    from migrator.adapters.runtime.compose import project_compose
    from migrator.app.api import context

    proc = project_compose(context(root), [root / "docker-compose.vllm.yml"]).run("config", "--format", "json")
    env = json.loads(proc.stdout)["services"]["backend"]["environment"]
    assert {k: env[k] for k in want} == want and env["OLLAMA_URL"] == "http://ollama:11434"
