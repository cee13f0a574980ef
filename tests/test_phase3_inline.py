"""phase3 --inline: the vLLM service added inside the user's compose file by a text edit that keeps
every other byte; refusals where it cannot place it; rollback restores the file."""

import json
import subprocess

import pytest

from migrator.core.errors import ExitCode

USER_COMPOSE = """\
# Our GraphRAG stack — do not reorder (ops runbook refers to line numbers)
services:
  backend:   # FastAPI
    image: graphrag-backend:1.4
    ports: ["127.0.0.1:8000:8000"]
    networks: [graphrag-network]

  ollama:
    image: ollama/ollama:0.12.6
    networks: [graphrag-network]

networks:
  graphrag-network:
    driver: bridge
"""


# phase3 renders a compose service only for a runtime that runs vLLM under compose (no daemon is needed
# to plan it); with the sandbox's process runtime there is nothing to render.
DOCKER = ("--set", "vllm.runtime=docker")


@pytest.fixture
def project(sandbox):
    (sandbox / "docker" / "docker-compose.yml").write_text(USER_COMPOSE)
    return sandbox


def test_inline_dry_run_diff_only_adds_lines(project, cli):
    result = cli("--project", str(project), *DOCKER, "--json", "phase3", "--inline", "--dry-run")
    diff = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}["docker/docker-compose.yml"]
    body = [ln for ln in diff.splitlines()[2:] if not ln.startswith("@@")]
    assert all(not ln.startswith("-") for ln in body)  # nothing of the user's is removed or changed
    assert '+  "vllm":' in diff and "+    ipc: host" in diff
    assert (project / "docker" / "docker-compose.yml").read_text() == USER_COMPOSE


@pytest.mark.docker  # `docker compose config` (the compose CLI; no daemon needed)
def test_inline_keeps_comments_order_and_the_rest_byte_for_byte(project, cli):
    # --confirm at a pipe stops phase3 before it starts the compose service: the files are written and
    # validated (`docker compose config -q`) by then, and no image is pulled.
    result = cli("--project", str(project), *DOCKER, "phase3", "--inline", "--confirm")
    text = (project / "docker" / "docker-compose.yml").read_text()
    head, _, tail = text.partition("  # --- added by graphrag-migrate phase3 --inline")
    assert USER_COMPOSE.startswith(head.rstrip("\n")) and tail.endswith(USER_COMPOSE[USER_COMPOSE.index("\nnetworks:"):])
    assert text.index('"vllm":') < text.index("\nnetworks:")  # inside services:, before networks:
    assert not (project / "docker" / "docker-compose.vllm.yml").exists()
    from migrator.files.envfile import EnvFile

    assert EnvFile.from_bytes((project / "docker" / ".env").read_bytes()).get("COMPOSE_FILE") is None
    valid = subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "config", "-q"], cwd=project / "docker",
                           capture_output=True, text=True)
    assert valid.returncode == 0, valid.stderr
    assert result.exit_code == ExitCode.CHECK_FAILED and "needs confirmation" in result.stderr, result.stderr
    assert cli("--project", str(project), "rollback", "--wait", "5").exit_code == 0
    assert (project / "docker" / "docker-compose.yml").read_text() == USER_COMPOSE


def test_inline_refuses_an_existing_service_of_that_name(project, cli):
    (project / "docker" / "docker-compose.yml").write_text(USER_COMPOSE.replace("  ollama:", "  vllm:"))
    result = cli("--project", str(project), *DOCKER, "--json", "phase3", "--inline", "--dry-run")
    step = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase3.compose-file"]
    assert result.exit_code == ExitCode.CHECK_FAILED and "service 'vllm' already exists" in step["message"]


def test_inline_refuses_a_missing_network(project, cli):
    """vLLM joins the backend's networks, which the user's file declares; project.network forces another."""
    result = cli("--project", str(project), *DOCKER, "--set", "project.network=elsewhere", "--json", "phase3",
                 "--inline", "--dry-run")
    step = {s["id"]: s for s in json.loads(result.stdout)["steps"]}["phase3.compose-file"]
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "network 'elsewhere' is not declared" in step["message"] and "network_mode" in step["fix"]


@pytest.mark.docker
@pytest.mark.parametrize("hostile", ['evil"\n  injected: true', "a: b", "${HOME}", "x'y #z", "line\\nbreak"])
def test_no_setting_value_can_break_or_inject_yaml(sandbox, hostile, cli):
    """A served name or extra arg with quotes, colons, newlines or $ stays one string in the rendered file."""
    import shlex

    import yaml

    result = cli("--project", str(sandbox), "--json", *DOCKER,
                 "--set", f"vllm.extra_args={shlex.quote(hostile)}", "phase3", "--dry-run")
    diffs = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}
    rendered = "\n".join(ln[1:] for ln in diffs["docker/docker-compose.vllm.yml"].splitlines()[3:])
    service = yaml.safe_load(rendered)["services"]["vllm"]
    assert hostile.replace("$", "$$") in service["command"] and "injected" not in service
    (sandbox / "docker" / "docker-compose.vllm.yml").write_text(rendered)
    config = subprocess.run(["docker", "compose", "-f", "docker-compose.yml", "-f", "docker-compose.vllm.yml",
                             "config", "--format", "json"], cwd=sandbox / "docker", capture_output=True, text=True)
    assert config.returncode == 0, config.stderr
    assert hostile in [a.replace("$$", "$") for a in json.loads(config.stdout)["services"]["vllm"]["command"]]
