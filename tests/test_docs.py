"""Docs that cannot go stale: README lists every command, exit code and config key."""

import re
from pathlib import Path

from typer.main import get_command

from migrator.cli.main import app
from migrator.core.config import describe_keys
from migrator.core.errors import ExitCode

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_command_is_in_the_readme():
    names = list(get_command(app).commands)
    assert set(names) >= {"phase1", "phase2", "phase3", "phase4", "status", "rollback", "rehearse", "sim"}
    for name in names:
        assert f"`{name}" in README, name


def test_exit_code_table_matches_the_enum():
    rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", README, re.M))
    assert rows == {str(int(code)): code.name for code in ExitCode}


def test_every_config_key_is_documented():
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+(?:\.[a-z0-9_]+)?)` \|", section, re.M))
    assert documented == {key for key, _default, _help in describe_keys()}


def test_readme_opens_with_the_rehearsal_and_the_test_command():
    first_block = README.split("```")[1]
    assert "graphrag-migrate rehearse" in first_block and "bash scripts/test.sh" in first_block
