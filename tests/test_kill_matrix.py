"""kill -9 inside every applying step of phases 1-4, then `rollback`: the project always ends on Ollama,
vLLM stopped, Ollama's model reloaded, every user file byte-identical to before the migration (issue 7)."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import QUICK_WATCH, REPO, tree_digest
from migrator.adapters.http import OllamaServer, get
from migrator.files.envfile import EnvFile
from migrator.core.ledger import Ledger

HERE = os.path.dirname(__file__)
# (The download step's kill -9 is in test_download: here the model is a local directory.)
STEPS = [("phase1", "phase1.unload-ollama"), ("phase1", "phase1.start-vllm"),
         ("phase2", "phase2.wiring"),
         ("phase3", "phase3.compose-file"), ("phase3", "phase3.compose-env"), ("phase3", "phase3.env"),
         ("phase4", "phase4.monitoring"), ("phase4", "phase4.switch"), ("phase4", "phase4.watch")]
# (phase2 writes only with --scaffold: its cases start from a backend without the vLLM settings and dependency.
# The compose handover, staging and the backend recreate are killed on real Docker in test_faults_docker;
# here phase4.backend has nothing to apply: the sandbox backend re-reads the env file by itself.)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("phase, step", STEPS)
def test_kill_during_a_step_then_rollback_restores_everything(sandbox, phase, step, when, cli):
    settings = json.loads(cli("--project", str(sandbox), "--json", "status").stdout)
    if phase == "phase2":  # something to scaffold: the settings fields and the langchain-openai line
        config = sandbox / "backend" / "src" / "core" / "config.py"
        config.write_text("\n".join(line for line in config.read_text().splitlines() if "vllm_" not in line) + "\n")
        (sandbox / "backend" / "requirements.txt").write_text("fastapi\nlangchain-ollama\n")
    before = tree_digest(sandbox)
    run = lambda *a: subprocess.run([sys.executable, os.path.join(HERE, "killer.py"), *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{REPO}:{HERE}"},
                                    timeout=120)
    if phase in ("phase3", "phase4"):
        assert cli("--project", str(sandbox), "phase1", "--unload-ollama").exit_code == 0
    if phase == "phase4":  # phase4 switches only after phases 1–3 (phase2 passed)
        assert cli("--project", str(sandbox), "phase2").exit_code == 0
        assert cli("--project", str(sandbox), "phase3").exit_code == 0
        assert cli("--project", str(sandbox), "bench", "--requests", "8", "--concurrency", "2",
                   "--output-tokens", "8").exit_code == 0
    extra = {"phase1": ["--unload-ollama"], "phase2": ["--scaffold"]}.get(phase, [])
    # The compose file and COMPOSE_FILE are written only for a runtime under compose (the sandbox's vLLM is a
    # process): the killed run plans vLLM as a docker service; it dies before anything would need the daemon.
    runtime = ["--set", "vllm.runtime=docker"] if step in ("phase3.compose-file", "phase3.compose-env") else []
    killed = run(step, when, "--", "--project", str(sandbox), *QUICK_WATCH, *runtime, phase, *extra)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = Ledger(sandbox).read_state()
    assert state["phases"][phase]["status"] == "in_progress"  # the crash is visible
    if phase == "phase2" and when == "after":
        assert tree_digest(sandbox) != before  # the scaffold had written when the CLI died
    if step in ("phase4.switch", "phase4.watch"):  # production had switched (after), or had not (before)
        switched = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") == "vllm"
        assert switched == (when == "after" or step == "phase4.watch")
    status = cli("--project", str(sandbox), "status")
    assert status.exit_code in (0, 1)  # status still reads everything

    rollback = cli("--project", str(sandbox), "--json", "rollback", "--wait", "10")
    doc = json.loads(rollback.stdout)
    assert rollback.exit_code == 0, doc
    assert tree_digest(sandbox) == before
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("LLM_BACKEND") == "ollama"
    assert not json.loads(cli("--project", str(sandbox), "--json", "status").stdout)["vllm"]["healthy"]
    ollama_url = settings["ollama"]["url"]
    assert [m["name"] for m in OllamaServer(ollama_url).loaded().body["models"]] == ["qwen3:32b"]  # reloaded
    assert get(settings["vllm"]["url"] + "/health", timeout=1).ok is False
