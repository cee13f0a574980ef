"""Global options before or after the verb, the --json contract on every path, choices as Enums, and exit
codes that come from the commands' results."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, tree_digest
from migrator.cli._common import GlobalOptions, exit_code_of, wants_json
from migrator.core.errors import ExitCode
from migrator.core.ledger import Ledger


def steps_of(result) -> list[tuple[str, str]]:
    return [(s["id"], s["status"]) for s in json.loads(result.stdout)["steps"]]


def assert_error_document(result, code: ExitCode) -> dict:
    """stdout is exactly one JSON document (json.loads of all of it), the error shape, the exit code."""
    doc = json.loads(result.stdout)
    assert result.exit_code == code, result.output
    assert doc["ok"] is False and doc["exit_code"] == int(code) and doc["error"]
    assert set(doc) == {"ok", "error", "fix", "exit_code"}
    return doc


# ---- global options after the verb ------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["phase1", "phase2", "phase3", "phase4"])
def test_phase_check_and_dry_run_take_the_global_options_after_the_verb(sandbox, cli, phase):
    before = tree_digest(sandbox)
    for mode in ("--check", "--dry-run"):
        first = cli("--project", str(sandbox), "--json", "--set", "deploy.watch_s=1", phase, mode)
        after = cli(phase, mode, "--project", str(sandbox), "--json", "--set", "deploy.watch_s=1", "-v")
        assert after.exit_code == first.exit_code and after.exit_code in (0, 1), after.output
        assert json.loads(after.stdout)["phase"] == phase and steps_of(after) == steps_of(first)
    assert tree_digest(sandbox) == before and not (sandbox / ".graphrag-migrate").exists()


def test_status_takes_project_and_json_after_the_verb(sandbox, cli):
    result = cli("status", "--project", str(sandbox), "--json")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert doc["project"] == str(sandbox) and doc["llm_backend"] == "ollama"
    short = cli("status", "-p", str(sandbox), "-c", str(sandbox / "migrate.yaml"), "--json")
    assert short.exit_code == 0 and json.loads(short.stdout)["project"] == str(sandbox)


def test_rollback_takes_yes_json_and_project_after_the_verb(sandbox, cli):
    result = cli("rollback", "--yes", "--json", "--project", str(sandbox), "--wait", "5")
    doc = json.loads(result.stdout)
    assert result.exit_code == 0, doc
    assert doc["ok"] is True and any(a["name"] == "stop vLLM" for a in doc["actions"])


def test_a_value_after_the_verb_wins_and_set_lists_combine(sandbox, cli):
    result = cli("--project", "/nonexistent", "--set", "vllm.port=1111", "phase3", "--dry-run", "--json",
                 "--project", str(sandbox), "--set", "vllm.port=2222", "--set", "model.served_name=other-name")
    assert result.exit_code == 0, result.output
    env_diff = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}["docker/.env"]
    assert "+VLLM_BASE_URL=http://127.0.0.1:2222/v1" in env_diff and "+VLLM_MODEL=other-name" in env_diff
    combined = cli("--set", "model.served_name=from-the-root", "phase3", "--dry-run", "--json",
                   "--project", str(sandbox), "--set", "vllm.port=3333")
    env_diff = {d["file"]: d["diff"] for d in json.loads(combined.stdout)["diffs"]}["docker/.env"]
    assert "+VLLM_BASE_URL=http://127.0.0.1:3333/v1" in env_diff and "+VLLM_MODEL=from-the-root" in env_diff


def test_config_after_the_verb_is_read(sandbox, cli):
    config = sandbox / "other.yaml"
    text = (sandbox / "migrate.yaml").read_text()
    assert "served_name: qwen2.5-32b-instruct" in text
    config.write_text(text.replace("served_name: qwen2.5-32b-instruct", "served_name: from-the-config-file"))
    result = cli("--project", str(sandbox), "phase3", "--dry-run", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    env_diff = {d["file"]: d["diff"] for d in json.loads(result.stdout)["diffs"]}["docker/.env"]
    assert "+VLLM_MODEL=from-the-config-file" in env_diff


def test_yes_never_implies_unload_ollama_only_the_flag_does(sandbox, cli):
    """README: only --unload-ollama unloads Ollama's chat model; --yes answers questions, it consents to nothing else."""
    def unload_step(*args):
        doc = json.loads(cli("phase1", "--dry-run", "-p", str(sandbox), "--json", *args).stdout)
        return next(s for s in doc["steps"] if s["id"] == "phase1.unload-ollama")

    assert unload_step()["message"].startswith("not requested")
    assert unload_step("-y")["message"].startswith("not requested")
    assert unload_step("--yes")["message"].startswith("not requested")
    assert unload_step("--unload-ollama")["status"] == "would run"


def test_phase1_yes_leaves_ollamas_model_loaded_and_unload_ollama_unloads_it(sandbox, cli):
    from migrator.adapters.http import OllamaServer
    from migrator.app import api

    ollama = OllamaServer(api.settings_for(sandbox).ollama.url)
    loaded = lambda: [m["name"] for m in ollama.loaded().body["models"]]  # noqa: E731 (its /api/ps)
    assert loaded() == ["qwen3:32b"]
    assert cli("--project", str(sandbox), "--yes", "phase1", "--no-bench").exit_code == 0
    assert loaded() == ["qwen3:32b"]
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    assert cli("--project", str(sandbox), "phase1", "--no-bench", "--unload-ollama").exit_code == 0
    assert loaded() == []
    assert cli("--project", str(sandbox), "rollback", "--wait", "5").exit_code == 0
    assert loaded() == ["qwen3:32b"]


def test_force_unlock_after_the_verb_removes_the_lock_then_runs_the_command(sandbox, cli):
    holder = Ledger(sandbox)
    info = holder.acquire_lock("graphrag-migrate phase1")
    result = cli("status", "--project", str(sandbox), "--json", "--force-unlock", info.id)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lock"] is None and Ledger(sandbox).read_lock() is None
    assert f"removed lock {info.id}" in result.stderr


def test_force_unlock_alone_prints_one_json_document(sandbox, cli):
    info = Ledger(sandbox).acquire_lock("graphrag-migrate phase1")
    result = cli("--project", str(sandbox), "--json", "--force-unlock", info.id)
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["ok"] is True and doc["removed"]["id"] == info.id


def test_project_envvar_is_read_and_an_explicit_project_after_the_verb_beats_it(sandbox, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHRAG_MIGRATE_PROJECT", str(sandbox))
    from_env = cli("status", "--json")
    assert from_env.exit_code == 0 and json.loads(from_env.stdout)["project"] == str(sandbox)
    monkeypatch.setenv("GRAPHRAG_MIGRATE_PROJECT", str(tmp_path / "nope"))
    explicit = cli("status", "--json", "--project", str(sandbox))
    assert explicit.exit_code == 0 and json.loads(explicit.stdout)["project"] == str(sandbox)


def test_verbose_after_the_verb_shows_the_traceback_of_an_internal_error(tmp_path, cli, monkeypatch):
    import migrator.app.api

    monkeypatch.setattr(migrator.app.api, "status", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    quiet = cli("status", "--project", str(tmp_path))
    loud = cli("status", "--project", str(tmp_path), "--verbose")
    assert quiet.exit_code == loud.exit_code == ExitCode.INTERNAL
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr and "RuntimeError: boom" in loud.stderr


def test_merging_later_values_win_flags_add_up_and_sets_combine():
    before = GlobalOptions(project="a", json=True, set=["x.y=1"], force_unlock="L1")
    merged = before.then(GlobalOptions(project="b", verbose=True, set=["x.y=2"]))
    assert merged == GlobalOptions(project="b", config=None, json=True, yes=False, verbose=True,
                                   set=["x.y=1", "x.y=2"], force_unlock="L1")


# ---- --json: exactly one document on stdout, on every path -------------------------------------------------
def test_json_success_is_one_document(sandbox, cli):
    result = cli("status", "--json", "--project", str(sandbox))
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize("args", [["status", "--nope", "--json"], ["--json", "status", "--nope"]])
def test_json_unknown_option_is_a_usage_error_document(cli, args):
    doc = assert_error_document(cli(*args), ExitCode.USAGE)
    assert "--nope" in doc["error"] and "--help" in doc["fix"]


def test_json_bad_choice_missing_argument_and_bad_parameter_are_documents(cli, tmp_path):
    bad_choice = assert_error_document(cli("rehearse", "--server", "nope", "--json"), ExitCode.USAGE)
    assert "sim" in bad_choice["error"] and "vllm-cpu" in bad_choice["error"]
    missing = assert_error_document(cli("--json", "bench", "--diff", str(tmp_path / "a")), ExitCode.USAGE)
    assert "--diff" in missing["error"]
    exclusive = assert_error_document(cli("phase1", "--check", "--dry-run", "--json", "-p", str(tmp_path)),
                                      ExitCode.USAGE)
    assert "--check and --dry-run are exclusive" in exclusive["error"]
    no_command = assert_error_document(cli("--json"), ExitCode.USAGE)
    assert "Missing command" in no_command["error"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_bad_set_option_is_a_usage_error_document(tmp_path, cli, where):
    args = ["--set", "nokey", "status", "--json"] if where == "before" else ["status", "--json", "--set", "nokey"]
    doc = assert_error_document(cli(*args, "--project", str(tmp_path)), ExitCode.USAGE)
    assert "nokey" in doc["error"] and doc["fix"]


def test_json_bad_config_value_is_a_usage_error_document(tmp_path, cli):
    doc = assert_error_document(cli("status", "--project", str(tmp_path), "--set", "vllm.port=abc", "--json"),
                                ExitCode.USAGE)
    assert "vllm.port" in doc["error"]


@pytest.mark.parametrize("command", [["status"], ["phase1", "--check"], ["rollback", "--wait", "1"]])
def test_json_missing_project_directory_is_a_usage_error_document(tmp_path, cli, command):
    doc = assert_error_document(cli(*command, "--json", "--project", str(tmp_path / "nope")), ExitCode.USAGE)
    assert "does not exist" in doc["error"] and "--project" in doc["fix"]
    assert not (tmp_path / "nope").exists()


def test_json_internal_error_is_exit_70_and_a_document(tmp_path, cli, monkeypatch):
    import migrator.app.api

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(migrator.app.api, "status", broken)
    result = cli("status", "--json", "--project", str(tmp_path))
    doc = assert_error_document(result, ExitCode.INTERNAL)
    assert doc["error"] == "internal error: RuntimeError: boom" and "bug" in doc["fix"]
    assert "internal error: RuntimeError: boom" in result.stderr and "Traceback" not in result.stderr


def test_without_json_a_usage_error_prints_nothing_on_stdout(cli):
    result = cli("status", "--nope")
    assert result.exit_code == ExitCode.USAGE and result.stdout == ""
    assert "No such option: --nope" in result.stderr


def test_without_json_a_domain_error_is_one_error_line_on_stderr(tmp_path, cli):
    result = cli("status", "--set", "nokey", "--project", str(tmp_path))
    assert result.exit_code == ExitCode.USAGE and result.stdout == ""
    assert result.stderr.startswith("error: --set 'nokey'") and "\n" not in result.stderr.strip()


@pytest.mark.parametrize("argv, expected", [(["status", "--json"], True), (["--json", "x"], True),
                                            (["status"], False), (["sim", "vllm", "--", "--json"], False)])
def test_wants_json_reads_the_raw_command_line(argv, expected):
    assert wants_json(argv) is expected


def test_a_usage_error_in_a_real_process_still_prints_one_document():
    proc = subprocess.run([sys.executable, "-m", "migrator.cli.main", "status", "--nope", "--json"],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=60)
    assert proc.returncode == ExitCode.USAGE
    assert json.loads(proc.stdout)["error"] == "No such option: --nope"


# ---- choices are Enums ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, option, choices", [
    ("rehearse", "--server", "sim|vllm-cpu"), ("rehearse", "--runtime", "auto|process|docker"),
    ("bench", "--backend", "vllm|ollama"), ("bench", "--api", "openai|ollama")])
def test_choices_are_listed_in_help_and_anything_else_is_refused(cli, command, option, choices):
    assert choices in cli(command, "--help").stdout.replace(" ", "")
    refused = cli(command, option, "nope")
    assert refused.exit_code == ExitCode.USAGE and f"Invalid value for '{option}'" in refused.stderr


def test_bench_fanout_with_a_rate_is_refused_before_any_load(tmp_path, cli):
    result = cli("bench", "--project", str(tmp_path), "--fanout", "2", "--rate", "1", "--no-record")
    assert result.exit_code == ExitCode.USAGE and "--fanout takes a positive count" in result.stderr
    assert not (tmp_path / ".graphrag-migrate").exists()


# ---- exit codes come from the results -----------------------------------------------------------------------
class _Result:
    def __init__(self, ok=True, exit_code=None):
        self.ok = ok
        if exit_code is not None:
            self.exit_code = exit_code


@pytest.mark.parametrize("result, expected", [
    (None, ExitCode.OK), (_Result(ok=True), ExitCode.OK), (_Result(ok=False), ExitCode.CHECK_FAILED),
    (_Result(ok=False, exit_code=ExitCode.STATE), ExitCode.STATE), (_Result(ok=True, exit_code=3), ExitCode.ENVIRONMENT)])
def test_exit_code_of_a_result_is_its_exit_code_else_its_ok(result, expected):
    assert exit_code_of(result) is expected
