"""--confirm: production changes are asked for at a terminal, refused on a pipe, answered by --yes."""

import os
import pty
import subprocess
import sys

from conftest import QUICK_WATCH, REPO, prepare_switch
from migrator.files.envfile import EnvFile
from migrator.core.errors import ExitCode


def llm_backend(sandbox):
    return EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND")


def test_confirm_refuses_to_wait_on_a_pipe_and_yes_answers_it(sandbox, cli):
    prepare_switch(sandbox)
    refused = cli("--project", str(sandbox), *QUICK_WATCH, "phase4", "--confirm")
    assert refused.exit_code == ExitCode.CHECK_FAILED
    assert "needs confirmation and stdin is not a terminal" in refused.stderr and "--yes" in refused.stderr
    assert llm_backend(sandbox) == "ollama"  # nothing production sees was changed
    agreed = cli("--project", str(sandbox), "--yes", *QUICK_WATCH, "phase4", "--confirm")
    assert agreed.exit_code == 0 and llm_backend(sandbox) == "vllm"
    cli("--project", str(sandbox), "rollback", "--wait", "5")


def run_at_terminal(sandbox, answer: bytes) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "migrator.cli.main", "--project", str(sandbox), *QUICK_WATCH,
                             "phase4", "--confirm"], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(slave)
    os.write(master, answer)
    _out, err = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, err.decode()


def test_confirm_asks_at_a_terminal(sandbox, cli):
    prepare_switch(sandbox)
    code, err = run_at_terminal(sandbox, b"n\n")
    assert code == ExitCode.CHECK_FAILED and "proceed? [y/N]" in err and "not confirmed" in err
    assert "LLM_BACKEND=vllm" in err and "then: backend recreated" in err  # one question names the whole switch
    assert llm_backend(sandbox) == "ollama"
    code, err = run_at_terminal(sandbox, b"y\n")  # one answer: switch, backend recreate and watch
    assert code == 0, err
    assert err.count("proceed? [y/N]") == 1
    assert llm_backend(sandbox) == "vllm"
    cli("--project", str(sandbox), "rollback", "--wait", "5")
