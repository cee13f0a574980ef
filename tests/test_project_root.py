"""Without --project the tool finds its project as git finds a repository (issue #14, item 10): the cwd or
the nearest parent holding migrate.yaml or .graphrag-migrate/, never climbing into $HOME from below, and says
on stderr which project it took when that is not the cwd."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import migrate_to_vllm, tree_digest
from migrator.app.api import find_project
from migrator.core.errors import ExitCode
from migrator.files.envfile import EnvFile


def layout(root: Path, marker: str = "migrate.yaml") -> Path:
    (root / "docker").mkdir(parents=True)
    (root / "backend" / "src" / "core").mkdir(parents=True)
    (root / "docker" / ".env").write_text("OLLAMA_BASE_URL=http://ollama:11434\n")
    if marker == "migrate.yaml":
        (root / "migrate.yaml").write_text("project:\n  backend_runtime: none\n")
    else:
        (root / ".graphrag-migrate").mkdir()
    return root


def test_found_from_a_subdirectory_by_its_migrate_yaml(tmp_path):
    root = layout(tmp_path / "graphrag")
    found = find_project(root / "backend" / "src" / "core", home=tmp_path / "home")
    assert found.root == root and found.marker == "migrate.yaml" and found.walked_up
    assert "found above" in found.describe() and str(root) in found.describe()


def test_found_by_its_state_directory_alone(tmp_path):
    root = layout(tmp_path / "graphrag", marker=".graphrag-migrate")
    found = find_project(root / "docker", home=tmp_path / "home")
    assert found.root == root and found.marker == ".graphrag-migrate"


def test_the_nearest_project_wins(tmp_path):
    outer = layout(tmp_path / "outer")
    inner = layout(outer / "backend" / "inner")
    assert find_project(inner / "docker", home=tmp_path / "home").root == inner


def test_a_file_named_graphrag_migrate_or_a_directory_named_migrate_yaml_is_no_marker(tmp_path):
    root = tmp_path / "graphrag"
    (root / "sub").mkdir(parents=True)
    (root / ".graphrag-migrate").write_text("")
    (root / "migrate.yaml").mkdir()
    found = find_project(root / "sub", home=tmp_path)
    assert found.root == root / "sub" and found.marker is None and not found.walked_up


def test_nothing_found_is_the_start_itself(tmp_path):
    start = tmp_path / "fresh" / "repo"
    start.mkdir(parents=True)
    found = find_project(start, home=tmp_path)
    assert found.root == start and not found.walked_up


def test_it_does_not_climb_into_home_from_below(tmp_path):
    """A stray ~/migrate.yaml must not capture every directory under $HOME (GIT_CEILING_DIRECTORIES)."""
    home = layout(tmp_path / "home")
    start = home / "src" / "other-repo"
    start.mkdir(parents=True)
    assert find_project(start, home=home).root == start
    assert find_project(home, home=home).root == home  # started in $HOME itself: it is the project


def test_cli_from_a_subdirectory_uses_the_project_and_says_so(cli, tmp_path, monkeypatch):
    root = layout(tmp_path / "graphrag")
    monkeypatch.chdir(root / "backend" / "src")
    result = cli("--json", "status")
    assert json.loads(result.stdout)["project"] == str(root)
    assert f"using project {root} (migrate.yaml found above {root / 'backend' / 'src'}" in result.stderr
    assert not (root / "backend" / "src" / ".graphrag-migrate").exists()


def test_cli_in_the_project_root_says_nothing_about_it(cli, tmp_path, monkeypatch):
    root = layout(tmp_path / "graphrag")
    monkeypatch.chdir(root)
    result = cli("--json", "status")
    assert json.loads(result.stdout)["project"] == str(root) and "using project" not in result.stderr


def test_project_option_wins_over_the_walk_and_a_relative_one_is_the_cwds(cli, tmp_path, monkeypatch):
    outer = layout(tmp_path / "outer")
    other = layout(tmp_path / "other")
    monkeypatch.chdir(outer / "docker")
    result = cli("--project", "../../other", "--json", "status")
    assert json.loads(result.stdout)["project"] == str(other) and "using project" not in result.stderr


def test_rollback_from_the_compose_directory_goes_back_to_ollama_in_the_project(sandbox, cli, monkeypatch):
    """The issue's case: `cd docker && graphrag-migrate rollback` created docker/.graphrag-migrate/ and left
    production on vLLM. It must find the project above and roll it back."""
    before = tree_digest(sandbox)
    migrate_to_vllm(sandbox)
    monkeypatch.chdir(sandbox / "docker")
    result = cli("rollback", "--wait", "5")
    assert result.exit_code == ExitCode.OK, result.stderr
    assert f"using project {sandbox}" in result.stderr
    assert not (sandbox / "docker" / ".graphrag-migrate").exists()
    assert EnvFile.from_bytes((sandbox / "docker" / ".env").read_bytes()).get("LLM_BACKEND") != "vllm"
    assert tree_digest(sandbox) == before
