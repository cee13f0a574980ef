"""Every path handed to compose, docker and the rendered files means the same whatever the cwd and
whether --project is relative or absolute (issue #14, item 4): README's own usage, `cd /path/to/graphrag &&
graphrag-migrate phase3`, looked for docker/docker/.env and rendered a relative model bind mount.

`docker compose config` needs no daemon (the docker CLI and its compose plugin only): it is the judge of
what compose makes of the rendered file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from migrator.adapters import vllm as vllm_launch
from migrator.adapters.runtime.compose import project_compose
from migrator.app import api
from migrator.core.config import Settings, anchor_paths, host_path

COMPOSE = """services:
  backend:
    image: graphrag-backend:local
    env_file: .env
    environment:
      - LLM_BACKEND=${LLM_BACKEND:-ollama}
networks:
  graphrag-network: {}
"""


def _compose_works() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0


needs_compose = pytest.mark.skipif(not _compose_works(), reason="no docker CLI with the compose plugin here")


@pytest.fixture
def project(tmp_path) -> Path:
    """docker/ (compose file, env file), a local model directory and an HF cache named relative to it."""
    root = tmp_path / "graphrag"
    (root / "docker").mkdir(parents=True)
    (root / "docker" / "docker-compose.yml").write_text(COMPOSE)
    (root / "docker" / ".env").write_text("COMPOSE_PROJECT_NAME=graphrag\n")
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text("{}")
    (root / "backend").mkdir()
    (root / "migrate.yaml").write_text("model:\n  id: ./models/tiny\nvllm:\n  hf_cache: cache/hf\n"
                                       "  vllm_cache: cache/vllm\n  device: cpu\n")
    return root


def cwd_cases(project: Path) -> list[tuple[str, Path, str | None]]:
    """(case, cwd, --project as typed): the root, the compose directory, elsewhere with a relative path."""
    elsewhere = project.parent / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True, exist_ok=True)
    return [("root, no --project", project, None), ("root, --project .", project, "."),
            ("compose dir, no --project", project / "docker", None),
            ("compose dir, --project ..", project / "docker", ".."),
            ("elsewhere, relative --project", elsewhere, os.path.relpath(project, elsewhere)),
            ("elsewhere, absolute --project", elsewhere, str(project))]


def rendered_compose_file(cli, typed: str | None) -> str:
    """What phase3 would write as docker-compose.vllm.yml, from its --dry-run (a creation diff)."""
    args = (["--project", typed] if typed is not None else []) + ["--json", "phase3", "--dry-run"]
    result = cli(*args)
    diffs = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}
    lines = diffs["docker/docker-compose.vllm.yml"].splitlines()
    return "".join(line[1:] + "\n" for line in lines if line.startswith("+") and not line.startswith("+++"))


def test_host_paths_are_the_projects_and_absolute(tmp_path):
    assert host_path("cache/hf", tmp_path) == str(tmp_path / "cache" / "hf")
    assert host_path("./models/../models/tiny", tmp_path) == str(tmp_path / "models" / "tiny")
    assert host_path("/srv/hf", tmp_path) == "/srv/hf"
    assert host_path("~/x", tmp_path) == os.path.expanduser("~/x")
    settings = Settings()
    assert anchor_paths(settings, tmp_path) is settings  # `~/…` defaults: nothing to anchor
    settings.vllm.hf_cache = "cache/hf"
    anchored = anchor_paths(settings, tmp_path)
    assert anchored.vllm.hf_cache == str(tmp_path / "cache" / "hf") and settings.vllm.hf_cache == "cache/hf"


def test_the_docker_spec_and_the_process_command_take_absolute_paths_from_every_cwd(project, monkeypatch):
    for case, cwd, typed in cwd_cases(project):
        monkeypatch.chdir(cwd)
        root = Path(typed) if typed is not None else api.find_project().root
        ctx = api.context(root)
        assert ctx.project == project, case
        spec = vllm_launch.container_spec(ctx.settings, ctx.project)
        assert set(spec["volumes"]) == {str(project / "cache" / "hf"), str(project / "cache" / "vllm"),
                                        str(project / "models" / "tiny")}, case
        assert spec["command"][spec["command"].index("--model") + 1] == "/model", case
        command = vllm_launch.process_command(ctx.settings, vllm_launch.model_arg(ctx.settings, ctx.project))
        assert command[command.index("--model") + 1] == str(project / "models" / "tiny"), case
        compose = project_compose(ctx)
        assert compose.files == [project / "docker" / "docker-compose.yml"], case
        assert compose.env_file == project / "docker" / ".env" and compose.workdir == project / "docker", case


@needs_compose
def test_compose_reads_the_env_file_and_mounts_the_projects_directories_from_every_cwd(project, cli,
                                                                                        monkeypatch):
    for case, cwd, typed in cwd_cases(project):
        monkeypatch.chdir(cwd)
        text = rendered_compose_file(cli, typed)
        assert f'- "{project}/cache/hf:/root/.cache/huggingface:rw"' in text, case  # no relative bind
        assert f'- "{project}/models/tiny:/model:ro"' in text, case
        (project / "docker" / "docker-compose.vllm.yml").write_text(text)
        ctx = api.context(Path(typed) if typed is not None else api.find_project().root)
        proc = project_compose(ctx, [project / "docker" / "docker-compose.vllm.yml"]).run(
            "config", "--format", "json", timeout=60)
        assert proc.returncode == 0, f"{case}: {proc.stderr}"  # it found docker/.env, not docker/docker/.env
        merged = json.loads(proc.stdout)
        binds = {v["source"]: v["target"] for v in merged["services"]["vllm"]["volumes"]}
        assert binds == {str(project / "cache" / "hf"): "/root/.cache/huggingface",
                         str(project / "cache" / "vllm"): "/root/.cache/vllm",
                         str(project / "models" / "tiny"): "/model"}, case
        assert merged["services"]["backend"]["environment"]["LLM_BACKEND"] == "ollama", case
        (project / "docker" / "docker-compose.vllm.yml").unlink()


@needs_compose
def test_phase3s_compose_validation_passes_from_the_compose_directory(project, cli, monkeypatch):
    """The step itself (`docker compose config -q` on the merge), run from docker/ as README's operator
    might: it failed with "couldn't find env file: …/docker/docker/.env"."""
    from phases.phase3 import ComposeConfigValid

    monkeypatch.chdir(project / "docker")
    (project / "docker" / "docker-compose.vllm.yml").write_text(rendered_compose_file(cli, None))
    outcome = ComposeConfigValid().check(api.context(api.find_project().root))
    assert outcome.ok, outcome.message
