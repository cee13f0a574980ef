"""phase4's staging project, without Docker: what it refuses (before anything starts), the env file and
compose override it writes (the override checked by the real `docker compose config`), and what --dry-run
shows. The real run — staging's own vLLM and backend under compose — is in test_phase3_compose_e2e."""

import json
import shutil
import socket
import subprocess

import pytest

from conftest import prepare_switch, tree_digest
from migrator.app import api
from migrator.core.engine import Context
from migrator.files.envfile import EnvFile
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger
from phases import staging


def context(root, **overrides) -> Context:
    settings = api.settings_for(root, overrides={k: str(v) for k, v in overrides.items()})
    ctx = api.context(root, settings)
    ctx.ledger.load()
    return ctx


def test_auto_skips_staging_when_nothing_runs_under_compose(sandbox):
    step = staging.Staging()
    outcome = step.check(context(sandbox))  # the sandbox: backend_runtime none, vLLM as a process
    assert outcome.ok and outcome.message.startswith("skipped")
    assert not step.check(context(sandbox, **{"deploy.staging": "on"})).ok


@pytest.mark.parametrize("overrides, expected", [
    ({"deploy.staging_backend_url": "PRODUCTION"}, "deploy.staging_backend_url has production's backend port"),
    ({"deploy.staging_vllm_port": "PRODUCTION_VLLM"}, "deploy.staging_vllm_port is production's vLLM port"),
    ({"deploy.staging_backend_url": "BUSY"}, "(deploy.staging_backend_url) is already in use"),
])
def test_collisions_with_production_are_refused_before_anything_starts(sandbox, overrides, expected, cli):
    settings = api.settings_for(sandbox)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    values = {"PRODUCTION": settings.project.backend_url, "PRODUCTION_VLLM": settings.vllm.port,
              "BUSY": f"http://127.0.0.1:{busy.getsockname()[1]}"}
    sets = [f"{k}={values[v]}" for k, v in overrides.items()]
    prepare_switch(sandbox, bench=False)  # phase4 reaches staging only after phases 1–3
    before = tree_digest(sandbox)
    try:
        result = cli("--project", str(sandbox), "--set", "deploy.staging=on", *[a for s in sets for a in ("--set", s)],
                     "phase4")
    finally:
        busy.close()
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert expected in result.stderr
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase4"]["failed_step"] == "phase4.staging"
    assert "staging" not in state["resources"]  # nothing was started, nothing to clean up
    # phase4's monitoring files are new (rollback removes them); every file that was there is byte-identical.
    after = tree_digest(sandbox)
    assert {k: after[k] for k in before} == before


def test_staging_env_file_has_its_own_ports_and_no_compose_variables(sandbox):
    env_path = sandbox / "docker" / ".env"
    env = EnvFile.from_bytes(env_path.read_bytes())
    for key, value in {"COMPOSE_FILE": "docker-compose.yml:docker-compose.vllm.yml",
                       "COMPOSE_PROJECT_NAME": "graphrag", "HF_TOKEN": "hf_secret_value"}.items():
        env = env.set(key, value)
    env_path.write_bytes(env.to_bytes())
    ctx = context(sandbox, **{"deploy.staging_backend_url": "http://127.0.0.1:18123",
                              "deploy.staging_vllm_port": 18124})
    staged = staging.staging_settings(ctx.settings)
    out = EnvFile.from_bytes(staging.staging_env_bytes(ctx, staged))
    assert out.get("COMPOSE_FILE") is None and out.get("COMPOSE_PROJECT_NAME") is None
    assert out.get("BACKEND_PORT") == "18123" and out.get("LLM_BACKEND") == "vllm"
    assert out.get("VLLM_BASE_URL") == "http://127.0.0.1:18124/v1"
    assert out.get("HF_TOKEN") == "hf_secret_value"  # the staging backend needs the same secrets…
    assert staging.project_name(ctx) == "graphrag-staging"
    assert env_path.read_bytes() == env.to_bytes()  # …and production's file is untouched
    # With production's vLLM, staging's backend points at it.
    shared = staging.staging_settings(context(sandbox, **{"deploy.staging_vllm": "production"}).settings)
    assert shared.vllm.port == ctx.settings.vllm.port


@pytest.mark.skipif(not shutil.which("docker"), reason="needs the docker CLI with compose v2 (no daemon)")
def test_override_makes_a_published_backend_a_separate_project(sandbox, tmp_path):
    """A bridge-network stack (ports published, container names fixed): compose itself merges the override."""
    compose = sandbox / "docker" / "docker-compose.yml"
    compose.write_text(
        "services:\n  backend:\n    image: graphrag-backend:local\n    container_name: graphrag-backend\n"
        "    env_file: .env\n    ports: ['8000:8000']\n"
        "  vllm:\n    image: vllm/vllm-openai:v0.32.0\n    container_name: graphrag-vllm\n"
        "    command: [--model, /model, --port, '8000']\n    ports: ['127.0.0.1:8001:8000']\n")
    ctx = context(sandbox, **{"vllm.runtime": "docker", "vllm.network_mode": "",
                              "vllm.container_name": "graphrag-vllm", "vllm.port": 8001,
                              "deploy.staging_backend_url": "http://127.0.0.1:18000",
                              "deploy.staging_vllm_port": 18001, "deploy.staging_project": "graphrag-stage"})
    staged = staging.staging_settings(ctx.settings)
    env_path = tmp_path / "staging.env"
    env_path.write_bytes(staging.staging_env_bytes(ctx, staged))
    merged = subprocess.run(["docker", "compose", "-f", str(compose), "config", "--format", "json"],
                            capture_output=True, text=True, cwd=compose.parent)
    assert merged.returncode == 0, merged.stderr
    override = tmp_path / "override.yml"
    override.write_text(staging.override_yaml(ctx, staged, json.loads(merged.stdout), env_path))
    final = subprocess.run(["docker", "compose", "-p", staging.project_name(ctx), "-f", str(compose), "-f",
                            str(override), "--env-file", str(env_path), "config", "--format", "json"],
                           capture_output=True, text=True, cwd=compose.parent)
    assert final.returncode == 0, final.stderr
    doc = json.loads(final.stdout)
    backend, vllm = doc["services"]["backend"], doc["services"]["vllm"]
    assert doc["name"] == "graphrag-stage"
    assert [(p["published"], p["target"]) for p in backend["ports"]] == [("18000", 8000)]  # replaced, not added
    assert backend["container_name"] == "graphrag-backend-staging"
    assert backend["environment"]["LLM_BACKEND"] == "vllm"  # staging's env file wins over production's .env
    assert vllm["container_name"] == "graphrag-vllm-staging"
    assert [(p["host_ip"], p["published"]) for p in vllm["ports"]] == [("127.0.0.1", "18001")]
    assert "--model" in vllm["command"]  # the command is staging's (rendered from the same settings)


def test_dry_run_shows_the_staging_project_and_writes_nothing(sandbox, cli):
    prepare_switch(sandbox, bench=False)  # else phase4's prerequisites fail its dry-run too
    before = tree_digest(sandbox)
    result = cli("--project", str(sandbox), "--json", "--set", "deploy.staging=on",
                 "--set", "deploy.staging_requests=7", "phase4", "--dry-run")
    assert result.exit_code == 0, result.stderr
    plan = next(s for s in json.loads(result.stdout)["steps"] if s["id"] == "phase4.staging")["plan"]
    assert "docker compose -p graphrag-sandbox-staging up -d --wait --no-deps backend vllm" in plan
    assert any(line.startswith("load test: 7 requests") for line in plan)
    assert tree_digest(sandbox) == before
    assert not (sandbox / ".graphrag-migrate" / "staging").exists()
