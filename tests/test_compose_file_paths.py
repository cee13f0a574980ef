"""COMPOSE_FILE's entries name the files compose really loads, in every layout the fixtures have.

Compose resolves a relative COMPOSE_FILE entry against the directory it runs in — not the env file's,
whatever `--project-directory` or `--env-file` say — and reads a `.env` by itself only from there. So the
entries are relative to the `.env`'s directory (another env file: the compose file's, where it is passed
with `--env-file`). Each layout is checked with the real `docker compose config` (the CLI only: no daemon),
run without `-f` as the operator runs it, and the step's check must refuse the value compose would
resolve to other files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from migrator.core.errors import ExitCode
from migrator.files.compose_text import compose_file_value, compose_run_dir, without_vllm_compose
from migrator.files.envfile import EnvFile

PROJECTS = Path(__file__).resolve().parent / "projects"
NO_DAEMON = {"DOCKER_HOST": "unix:///nonexistent/graphrag-migrate-test.sock"}


def compose_cli_works() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_compose = pytest.mark.skipif(not compose_cli_works(), reason="no `docker compose` CLI here")


def root_env_layout(root: Path) -> None:
    """poetry-v1-prefix with its env file moved to the repo root: docker/docker-compose.yml reads ../.env."""
    (root / "docker" / ".env").rename(root / ".env")
    compose = root / "docker" / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("    env_file: .env\n", "    env_file: ../.env\n"))


LAYOUTS = {  # name: (fixture, reshape, the env file, where compose runs)
    "env beside compose in docker/": ("poetry-v1-prefix", None, "docker/.env", "docker"),
    "root .env, compose in docker/": ("poetry-v1-prefix", root_env_layout, ".env", "."),
    "config/backend.env": ("completion-pipfile", None, "config/backend.env", "."),
    "compose include:": ("compose-include", None, ".env", "."),
}


def project(cli, tmp_path: Path, layout: str) -> Path:
    shape, reshape, env_file, _ = LAYOUTS[layout]
    root = tmp_path / shape
    shutil.copytree(PROJECTS / shape, root)
    if reshape:
        reshape(root)
    result = cli("init", "--project", str(root), "--yes", "--set", f"project.env_file={env_file}")
    assert result.exit_code == 0, result.stderr
    return root


def phase3_files(cli, root: Path):
    """phase3 up to the step that would start vLLM (it needs confirmation): every file written."""
    from migrator.core.ledger import Ledger

    result = cli("--project", str(root), "phase3", "--confirm", env=NO_DAEMON)
    assert result.exit_code == ExitCode.CHECK_FAILED and "needs confirmation" in result.stderr, result.stderr
    return Ledger(root).read_state()["phases"]["phase3"]["steps"]


def as_the_operator_runs_it(root: Path, layout: str) -> subprocess.CompletedProcess:
    """Plain `docker compose` where it reads the env file: a `.env` from its own directory, any other env
    file through `--env-file`; no `-f`, so the files are COMPOSE_FILE's."""
    _, _, env_file, run_dir = LAYOUTS[layout]
    env = [] if Path(env_file).name == ".env" else ["--env-file", str(root / env_file)]
    return subprocess.run(["docker", "compose", *env, "--profile", "*", "config", "--format", "json"],
                          cwd=root / run_dir, capture_output=True, text=True, timeout=60)


@needs_compose
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compose_file_loads_the_users_files_and_vllms_from_where_compose_reads_the_env_file(cli, tmp_path, layout):
    root = project(cli, tmp_path, layout)
    steps = phase3_files(cli, root)
    assert steps["phase3.compose-env"]["status"] == "passed", steps["phase3.compose-env"]
    merged = as_the_operator_runs_it(root, layout)
    assert merged.returncode == 0, merged.stderr
    services = json.loads(merged.stdout)["services"]
    expected = yaml.safe_load((root / "expected.yaml").read_text())
    assert set(expected["llm_services"]) <= set(services)  # the user's files
    assert any((s.get("labels") or {}).get("org.graphrag-migrate.managed") for s in services.values())  # and vLLM's


@needs_compose
def test_the_check_refuses_bare_names_compose_would_look_for_beside_a_root_env(cli, tmp_path):
    layout = "root .env, compose in docker/"
    root = project(cli, tmp_path, layout)
    phase3_files(cli, root)
    env_path = root / ".env"
    written = EnvFile.from_bytes(env_path.read_bytes()).get("COMPOSE_FILE")
    assert written == "docker/docker-compose.yml:docker/docker-compose.vllm.yml"
    # what graphrag-migrate wrote before: the names alone, which compose looks for at the root
    env_path.write_bytes(EnvFile.from_bytes(env_path.read_bytes())
                         .set("COMPOSE_FILE", "docker-compose.yml:docker-compose.vllm.yml").to_bytes())
    assert as_the_operator_runs_it(root, layout).returncode != 0  # compose agrees: those files are not there

    result = cli("--project", str(root), "--json", "phase3", "--check", env=NO_DAEMON)
    step = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase3.compose-env"]
    assert step["status"] == "missing"
    assert step["message"] == ("COMPOSE_FILE=docker-compose.yml:docker-compose.vllm.yml: docker-compose.yml is "
                               "docker-compose.yml, not there; docker-compose.vllm.yml is docker-compose.vllm.yml, "
                               "not there (relative to the project root, where compose reads .env)")

    phase3_files(cli, root)  # phase3 again corrects them
    assert EnvFile.from_bytes(env_path.read_bytes()).get("COMPOSE_FILE") == written
    assert as_the_operator_runs_it(root, layout).returncode == 0


def test_an_entry_naming_vllms_file_elsewhere_is_not_taken_for_it(tmp_path):
    docker = tmp_path / "docker"
    docker.mkdir()
    user, vllm = docker / "compose.yaml", docker / "docker-compose.vllm.yml"
    user.write_text("services: {}\n")
    (tmp_path / "gpu.yml").write_text("services: {}\n")
    run_dir = compose_run_dir(tmp_path / ".env", user)
    assert run_dir == tmp_path
    # the user's own entries stay as spelled; a bare vLLM name (resolving at the root) is corrected
    assert compose_file_value("docker/compose.yaml:gpu.yml:docker-compose.vllm.yml", [user], vllm, run_dir) \
        == "docker/compose.yaml:gpu.yml:docker/docker-compose.vllm.yml"
    assert compose_file_value(None, [user], vllm, run_dir) == "docker/compose.yaml:docker/docker-compose.vllm.yml"
    assert compose_run_dir(tmp_path / "config" / "backend.env", user) == docker  # read through --env-file
    env = EnvFile.from_bytes(b"COMPOSE_FILE=docker/compose.yaml:gpu.yml:docker/docker-compose.vllm.yml\n")
    back, dropped = without_vllm_compose(env)
    assert dropped == "docker/docker-compose.vllm.yml" and back.get("COMPOSE_FILE") == "docker/compose.yaml:gpu.yml"
