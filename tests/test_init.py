"""`graphrag-migrate init` on the fixture projects (tests/projects/*/): what it discovers is compared field by
field with each expected.yaml (through the CLI, with `docker compose config` when the docker CLI is here,
and with the YAML fallback); the migrate.yaml it writes loads and names real file:line evidence; an
existing migrate.yaml is refused without --force and backed up with it; --dry-run writes nothing; a
choice stops it (exit 1) unless --yes or --set; the sample project gives the defaults it already matches.
No Docker daemon, no server: `docker compose config` needs neither."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, tree_digest
from migrator.app.discover import discover, interpolate
from migrator.core.config import Settings, describe_keys, load_settings
from migrator.core.fileops import FileWriter
from migrator.core.ledger import Ledger

PROJECTS = REPO / "tests" / "projects"
FIXTURES = sorted(p.parent.name for p in PROJECTS.glob("*/expected.yaml"))
SAMPLE = REPO / "migrator" / "app" / "sample_project"
NOT_DISCOVERED = {"shape", "description", "factory"}  # expected.yaml's prose, and how tests build its LLM
DEFAULTS = {key: default for key, default, _help in describe_keys()}


def copy(src: Path, tmp_path: Path) -> Path:
    root = tmp_path / src.name
    shutil.copytree(src, root)
    return root


def differences(expected, found, where: str = "") -> list[str]:
    """Every place `found` differs from `expected` (each key of expected, recursively; lists item by item)."""
    if isinstance(expected, dict):
        if not isinstance(found, dict):
            return [f"{where}: expected {expected!r}, found {found!r}"]
        out = []
        for key, value in expected.items():
            if not where and key in NOT_DISCOVERED:
                continue
            path = f"{where}.{key}" if where else key
            out += (differences(value, found[key], path) if key in found else [f"{path}: not in the output"])
        return out
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found) \
            and any(isinstance(e, dict) for e in expected):
        return [d for i, (e, f) in enumerate(zip(expected, found)) for d in differences(e, f, f"{where}[{i}]")]
    return [] if expected == found else [f"{where}: expected {expected!r}, found {found!r}"]


def init_json(cli, root: Path, *args: str):
    result = cli("--project", root, "init", "--json", *args)
    return result, json.loads(result.stdout)


def evidence_problems(root: Path, text: str) -> list[str]:
    """Value lines without evidence, and `file:line` evidence that names no real line."""
    problems = []
    for line in text.splitlines():
        m = re.match(r"^  ([a-z_]+): .*?  # (.*)$", line)
        if line.startswith("  ") and not line.startswith("  #") and m is None:
            problems.append(f"no evidence comment: {line!r}")
            continue
        if m is None:
            continue
        items = [e.strip() for e in m.group(2).split("; GUESSED")[0].split(",")]
        if not any(re.fullmatch(r"\S+:\d+", e) or e.startswith("(") for e in items):
            problems.append(f"no file:line on {line!r}")
        for item in items:
            ref = re.fullmatch(r"(\S+):(\d+)", item)
            if ref is None:
                continue
            path, n = root / ref.group(1), int(ref.group(2))
            if not path.is_file():
                problems.append(f"{item}: no such file")
            elif not 1 <= n <= len(path.read_text(encoding="utf-8").splitlines()):
                problems.append(f"{item}: past the end of the file")
    return problems


@pytest.mark.parametrize("shape", FIXTURES)
def test_init_finds_what_expected_yaml_says(cli, tmp_path, shape):
    expected = yaml.safe_load((PROJECTS / shape / "expected.yaml").read_text(encoding="utf-8"))
    root = copy(PROJECTS / shape, tmp_path)
    result, doc = init_json(cli, root)
    assert result.exit_code == 0, result.stderr
    diffs = differences(expected, doc["discovered"])
    assert not diffs, f"{shape} (merged model: {doc['discovered']['compose_model']}):\n  " + "\n  ".join(diffs)


@pytest.mark.parametrize("shape", FIXTURES)
def test_the_yaml_fallback_finds_the_same(tmp_path, shape):
    """Without `docker compose config`, the files merged here by compose's rules give the same answers."""
    expected = yaml.safe_load((PROJECTS / shape / "expected.yaml").read_text(encoding="utf-8"))
    found = discover(copy(PROJECTS / shape, tmp_path), use_compose=False)
    assert found.compose_model.startswith("yaml")
    diffs = differences(expected, found.to_dict())
    assert not diffs, f"{shape} (YAML fallback):\n  " + "\n  ".join(diffs)


@pytest.mark.parametrize("shape", FIXTURES)
def test_written_migrate_yaml_loads_and_its_evidence_is_real(cli, tmp_path, shape):
    root = copy(PROJECTS / shape, tmp_path)
    result, doc = init_json(cli, root)
    assert result.exit_code == 0, result.stderr
    text = (root / "migrate.yaml").read_text(encoding="utf-8")
    assert doc["written"] and text == doc["text"]
    settings = load_settings(root / "migrate.yaml", environ={})
    for key, value in doc["values"].items():
        section, _, name = key.partition(".")
        assert getattr(getattr(settings, section), name) == value, key
        assert doc["evidence"][key], f"{key} has no evidence"
    assert not evidence_problems(root, text), evidence_problems(root, text)
    assert "# discovered (informational)" in text
    for item in doc["undecided"]:
        assert item["key"] in DEFAULTS and item["key"] not in doc["values"] and item["fix"]
        assert f"#   {item['key']}:" in text


def test_what_init_sets_per_fixture(cli, tmp_path):
    """The values each fixture's shape implies, spot-checked (the full table is in the files themselves)."""
    want = {
        "compose-include": {"project.compose_file": "docker-compose.yml", "project.env_file": ".env",
                            "backend.config_module": "rag/config.py", "backend.llm_module": "rag/chain.py",
                            "ollama.model": "qwen2.5:7b"},
        "poetry-v1-prefix": {"project.network": None, "project.backend_url": "http://localhost:8080",
                             "backend.config_module": "src/graphsvc/settings.py", "backend.chat_path": "/query",
                             "backend.chat_message_field": "text", "backend.requirements": "pyproject.toml"},
        "provider-switch": {"ollama.url": "http://localhost:11435", "backend.chat_path": "/v1/ask",
                            "backend.chat_message_field": "query"},
        "root-multi-service": {"project.backend_service": "api", "backend.requirements": "../pyproject.toml",
                               "project.llm_services": ["api", "worker"]},
        "existing-vllm": {"vllm.service_name": "graphrag-vllm", "vllm.port": 8002},
        "upper-pydantic-template": {"backend.settings_fields": ["LLM_BACKEND", "VLLM_BASE_URL", "VLLM_MODEL"],
                                    "ollama.model": "mistral:7b-instruct"},
        "py312-dockerfile": {"ollama.url": "http://localhost:11434", "ollama.model": "gemma2:9b"},
    }
    undecided = {"compose-include": {"ollama.url"}, "upper-pydantic-template": {"ollama.url", "project.env_file"}}
    for shape, values in want.items():
        _, doc = init_json(cli, copy(PROJECTS / shape, tmp_path / shape))
        assert {k: doc["values"].get(k) for k in values} == values, shape
        assert {u["key"] for u in doc["undecided"]} == undecided.get(shape, set()), shape


def test_the_sample_project_gives_the_defaults_it_already_matches(cli, tmp_path):
    root = copy(SAMPLE, tmp_path)
    result, doc = init_json(cli, root)
    assert result.exit_code == 0, result.stderr
    assert doc["undecided"] == [] and doc["choices"] == []
    differing = {k: v for k, v in doc["values"].items() if v != DEFAULTS[k]}
    # the two the defaults leave off (probes skipped), set to what the rehearsal uses for this backend
    assert differing == {"backend.chat_path": "/chat", "backend.history_path": "/history/{session}"}
    assert {"project.compose_file", "project.env_file", "project.backend_service", "project.backend_url",
            "backend.dir", "backend.config_module", "backend.llm_module", "backend.requirements",
            "ollama.url", "ollama.model"} <= set(doc["values"])
    assert doc["discovered"]["provider_switch"]["variable"] == "LLM_BACKEND"


def test_an_existing_migrate_yaml_is_refused_without_force_and_backed_up_with_it(cli, tmp_path):
    root = copy(PROJECTS / "existing-vllm", tmp_path)
    mine = b"# mine\nvllm:\n  port: 8005\n"
    (root / "migrate.yaml").write_bytes(mine)
    before = tree_digest(root)
    result, doc = init_json(cli, root)
    assert result.exit_code == 1 and doc["ok"] is False
    assert "--force" in doc["fix"] and "exists" in doc["error"]
    assert tree_digest(root) == before and not (root / ".graphrag-migrate").exists()

    result, doc = init_json(cli, root, "--force")
    assert result.exit_code == 0, result.stderr
    assert doc["replaced"] and doc["backup"] == ".graphrag-migrate/backups/migrate.yaml"
    assert (root / doc["backup"]).read_bytes() == mine
    assert (root / "migrate.yaml").read_text(encoding="utf-8") == doc["text"]
    audit = [json.loads(line) for line in (root / ".graphrag-migrate" / "audit.jsonl").read_text().splitlines()]
    assert any(a.get("file") == "migrate.yaml" and a["action"] == "write" for a in audit)
    # rollback restores every file the tool wrote through the ledger: this one too
    ledger = Ledger(root)
    ledger.load()
    assert FileWriter(ledger).restore("migrate.yaml") == "restored from backup"
    assert (root / "migrate.yaml").read_bytes() == mine


def test_a_new_migrate_yaml_is_not_a_file_rollback_removes(cli, tmp_path):
    """Created fresh, it is the operator's configuration: written atomically, not recorded in the ledger."""
    root = copy(PROJECTS / "envlist-getenv", tmp_path)
    result, _doc = init_json(cli, root)
    assert result.exit_code == 0
    assert (root / "migrate.yaml").is_file() and not (root / ".graphrag-migrate").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_dry_run_prints_the_file_and_writes_nothing(cli, tmp_path, existing):
    root = copy(PROJECTS / "root-multi-service", tmp_path)
    if existing:
        (root / "migrate.yaml").write_text("vllm:\n  port: 8005\n")
    before = tree_digest(root)
    result = cli("--project", root, "init", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert tree_digest(root) == before and not (root / ".graphrag-migrate").exists()
    printed = yaml.safe_load(result.stdout)
    assert printed["project"]["backend_service"] == "api" and "would write" in result.stderr
    _, doc = init_json(cli, root, "--dry-run")
    assert doc["dry_run"] and not doc["written"] and tree_digest(root) == before


def two_stacks(tmp_path: Path) -> Path:
    """The existing-vllm shape plus a second stack at the root running the same backend: two candidates."""
    root = copy(PROJECTS / "existing-vllm", tmp_path)
    text = (root / "docker" / "docker-compose.yml").read_text(encoding="utf-8")
    (root / "docker-compose.yml").write_text(text.replace("../backend", "./backend")
                                             .replace("env_file: .env", "env_file: docker/.env"))
    return root


def test_a_choice_stops_init_naming_the_set_that_settles_it(cli, tmp_path):
    root = two_stacks(tmp_path)
    before = tree_digest(root)
    result, doc = init_json(cli, root)
    assert result.exit_code == 1 and not doc["ok"] and not doc["written"]
    assert tree_digest(root) == before
    [choice] = doc["choices"]
    assert choice["key"] == "project.compose_file"
    assert {c["value"] for c in choice["candidates"]} == {"docker-compose.yml", "docker/docker-compose.yml"}
    assert "--set project.compose_file=" in result.stderr and "--yes" in result.stderr


def test_yes_takes_the_best_guess_and_says_so(cli, tmp_path):
    root = two_stacks(tmp_path)
    result, doc = init_json(cli, root, "--yes")
    assert result.exit_code == 0, result.stderr
    assert doc["values"]["project.compose_file"] == "docker/docker-compose.yml"
    assert "project.compose_file" in doc["guessed"]
    assert "guessed project.compose_file=docker/docker-compose.yml" in result.stderr
    line = next(ln for ln in (root / "migrate.yaml").read_text().splitlines() if ln.startswith("  compose_file:"))
    assert "GUESSED (--yes)" in line and "docker-compose.yml" in line


def test_set_settles_a_choice_and_steers_the_discovery(cli, tmp_path):
    root = two_stacks(tmp_path)
    result, doc = init_json(cli, root, "--set", "project.compose_file=docker-compose.yml")
    assert result.exit_code == 0, result.stderr
    assert doc["guessed"] == {} and doc["choices"] == []
    assert doc["values"]["project.compose_file"] == "docker-compose.yml"
    assert doc["discovered"]["compose_project_dir"] == "."
    assert doc["evidence"]["project.compose_file"] == ["(--set on the command line)"]


def test_set_fills_an_undecided_key_and_a_bad_set_is_a_usage_error(cli, tmp_path):
    root = copy(PROJECTS / "compose-include", tmp_path)
    result, doc = init_json(cli, root, "--set", "ollama.url=http://localhost:11434", "--set", "vllm.port=8010")
    assert result.exit_code == 0, result.stderr
    assert doc["values"]["ollama.url"] == "http://localhost:11434" and doc["values"]["vllm.port"] == 8010
    assert doc["undecided"] == []
    assert load_settings(root / "migrate.yaml", environ={}).vllm.port == 8010
    bad = cli("--project", tmp_path / "compose-include", "init", "--dry-run", "--set", "vllm.prot=1")
    assert bad.exit_code == 2 and "prot" in bad.stderr and "port" in bad.stderr


def test_two_env_files_for_the_backend_are_a_choice(cli, tmp_path):
    root = copy(PROJECTS / "existing-vllm", tmp_path)
    compose = root / "docker" / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("env_file: .env", "env_file: [.env, ollama.env]"))
    (root / "docker" / "ollama.env").write_text("OLLAMA_MODEL=qwen2.5:32b\n")
    result, doc = init_json(cli, root)
    assert result.exit_code == 1
    assert [c["key"] for c in doc["choices"]] == ["project.env_file"]
    _, doc = init_json(cli, root, "--yes")
    assert doc["values"]["project.env_file"] == "docker/ollama.env"  # compose: the last one listed wins


def test_the_ollama_only_inside_compose_says_why_probes_cannot_reach_it(cli, tmp_path):
    _, doc = init_json(cli, copy(PROJECTS / "upper-pydantic-template", tmp_path))
    item = next(u for u in doc["undecided"] if u["key"] == "ollama.url")
    assert "publishes no port" in item["why"] and "from this host" in item["why"]
    assert "--set ollama.url=" in item["fix"]
    env = next(u for u in doc["undecided"] if u["key"] == "project.env_file")
    assert "cp docker/.env.example docker/.env" in env["fix"]


def test_interpolation_follows_compose():
    env = {"A": "1", "EMPTY": ""}
    assert interpolate("${A}-${B:-two}-${EMPTY:-d}-${EMPTY-d}-$A-$$A-${A:+set}", env) == "1-two-d--1-$A-set"


def test_no_compose_file_is_undecided_not_a_crash(cli, tmp_path):
    root = tmp_path / "bare"
    root.mkdir()
    result, doc = init_json(cli, root, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "project.compose_file" in {u["key"] for u in doc["undecided"]}
    assert isinstance(load_settings(None), Settings)


def test_a_broken_repo_is_described_not_a_crash(cli, tmp_path):
    """Compose YAML that does not parse, a service that is not a mapping, Python that parses nowhere."""
    root = copy(PROJECTS / "existing-vllm", tmp_path)
    compose = root / "docker" / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("  vllm:\n", "  broken: [1, 2]\n  vllm:\n"))
    (root / "docker-compose.yml").write_text("services:\n  api: {build: .\n")  # unterminated flow mapping
    (root / "backend" / "src" / "bad.py").write_text("def f(:\n    pass\n")
    result, doc = init_json(cli, root, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert doc["values"]["project.compose_file"] == "docker/docker-compose.yml"
    notes = " ".join(doc["discovered"]["notes"])
    assert "broken is not a mapping" in notes and "bad.py" in notes
    assert doc["discovered"]["llm_call_sites"][0]["line"] == 9
