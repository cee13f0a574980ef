"""phase3 on projects as they are found: vLLM run as a process (no compose service to render)."""

import json

from conftest import tree_digest
from migrator.core.ledger import Ledger
from migrator.files.envfile import EnvFile


def test_process_runtime_phase3_renders_no_compose_service(sandbox, cli):
    before = tree_digest(sandbox)
    assert cli("--project", str(sandbox), "phase1", "--no-bench").exit_code == 0
    dry = json.loads(cli("--project", str(sandbox), "--json", "phase3", "--dry-run").stdout)
    assert [d["file"] for d in dry["diffs"]] == ["docker/.env"]
    result = cli("--project", str(sandbox), "--json", "phase3")
    assert result.exit_code == 0, result.stderr
    steps = {s["id"]: s for s in json.loads(result.stdout)["steps"]}
    for step in ("phase3.compose-file", "phase3.compose-env", "phase3.compose-config"):
        assert steps[step]["status"] == "satisfied" or steps[step]["status"] == "passed", steps[step]
        assert steps[step]["message"] == "runtime process: vLLM is not a compose service", steps[step]
    assert not (sandbox / "docker" / "docker-compose.vllm.yml").exists()
    env = EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes())
    assert env.get("COMPOSE_FILE") is None and env.get("VLLM_BASE_URL")  # the endpoint, still
    assert set(Ledger(sandbox).read_state()["files"]) == {"docker/.env"}  # the only file phase3 wrote
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    assert tree_digest(sandbox) == before

