"""The fixture projects under tests/projects/ are what their expected.yaml says.

expected.yaml is the ground truth `init` discovery will be tested against, so it is checked here against
the files themselves: every key of the schema present, every path real, every call-site and provider-switch
line naming its class or variable, every .py parsing on the Python the fixture targets, the compose files
loading and naming the LLM services, the env file or template there exactly when it says so.
Fast: no Docker, no server, nothing imported from the fixtures.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

PROJECTS = Path(__file__).resolve().parent / "projects"
FIXTURES = sorted(p.parent.name for p in PROJECTS.glob("*/expected.yaml"))

# The schema: top-level keys, and the keys of each nested mapping (services: of each service; lists: of
# each item). provider_switch's keys apply only when it is not null.
TOP_KEYS = ["shape", "description", "runs_here", "compose_files", "compose_project_dir", "llm_services",
            "services", "env_file", "env_template", "backend", "settings", "llm_call_sites",
            "provider_switch", "dependency_file", "ollama", "chat_endpoint", "health",
            "existing_vllm_service"]
NESTED_KEYS = {
    "backend": ["dir", "import_root", "app", "python", "python_source"],
    "settings": ["style", "file", "class", "case_sensitive", "env_prefix", "ollama_url_name",
                 "ollama_model_name"],
    "provider_switch": ["file", "line", "variable", "values", "style"],
    "dependency_file": ["path", "kind"],
    "ollama": ["service", "published_port"],
    "chat_endpoint": ["path", "method", "streaming", "message_field"],
    "health": ["path", "llm_field"],
}
SERVICE_KEYS = ["build_context", "networks", "env_delivery", "env_keys_from_compose", "ports", "healthcheck"]
CALL_SITE_KEYS = ["file", "line", "class", "streaming"]
CHOICES = {
    ("services", "env_delivery"): {"env_file", "environment", "both"},
    ("backend", "python_source"): {"requires-python", "Dockerfile", ".python-version", "default"},
    ("settings", "style"): {"pydantic_v2", "pydantic_v1", "os_getenv", "dataclass"},
    ("provider_switch", "style"): {"if_chain", "dict"},
    ("dependency_file", "kind"): {"requirements", "pep621", "poetry", "pipfile"},
}
# LLM client classes whose every construction in a fixture's backend must be listed in llm_call_sites.
LLM_CLASSES = {"ChatOllama", "OllamaLLM", "ChatOpenAI"}


def load(shape: str) -> dict:
    return yaml.safe_load((PROJECTS / shape / "expected.yaml").read_text(encoding="utf-8"))


def runs_here(shape: str) -> bool:
    """For parametrizing: a broken expected.yaml counts as runnable here (its own test reports it)."""
    try:
        return load(shape).get("runs_here", True) is not False
    except Exception:
        return True


def source_files(shape: str) -> list[Path]:
    return sorted((PROJECTS / shape).rglob("*.py"))


def line_of(root: Path, rel: str, line: int) -> str:
    lines = (root / rel).read_text(encoding="utf-8").splitlines()
    assert 1 <= line <= len(lines), f"{rel}: line {line} is past the end ({len(lines)} lines)"
    return lines[line - 1]


def missing_keys(expected: dict) -> list[str]:
    missing = [k for k in TOP_KEYS if k not in expected]
    for section, keys in NESTED_KEYS.items():
        value = expected.get(section)
        if section == "provider_switch" and value is None:
            continue
        if section in expected and not isinstance(value, dict):
            missing.append(f"{section} (not a mapping)")
        if not isinstance(value, dict):
            continue
        missing += [f"{section}.{k}" for k in keys if k not in value]
    for name, service in (expected.get("services") or {}).items():
        missing += [f"services.{name}.{k}" for k in SERVICE_KEYS if k not in (service or {})]
    for i, site in enumerate(expected.get("llm_call_sites") or []):
        missing += [f"llm_call_sites[{i}].{k}" for k in CALL_SITE_KEYS if k not in site]
    return missing


def grammar_312() -> list[str] | None:
    """A command that runs a Python with the 3.12 grammar (PEP 701), or None. A pyenv shim for a version
    that is installed but not selected is on PATH yet fails, so each candidate is run, not just found."""
    if sys.version_info >= (3, 12):
        return [sys.executable]
    for name in ("python3.12", "python3.13", "python3.14"):
        exe = shutil.which(name)
        if exe is None:
            continue
        probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return [exe]
    from migrator.app.harness.backend_venv import find_python  # an installed pyenv version not selected

    found = find_python("3.12")
    return [found] if found else None


def grammar_311() -> list[str] | None:
    if sys.version_info[:2] == (3, 11):
        return [sys.executable]
    exe = shutil.which("python3.11")
    if exe and subprocess.run([exe, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
        return [exe]
    return None


PARSE = ("import ast, sys\n"
         "for f in sys.argv[1:]:\n"
         "    try:\n"
         "        ast.parse(open(f, encoding='utf-8').read(), f)\n"
         "    except SyntaxError as e:\n"
         "        print(f, e.lineno, e.msg, sep='\\t')\n")


def unparsable(python: list[str], files: list[Path]) -> dict[str, str]:
    """{file: 'line: message'} for each file that python cannot parse."""
    run = subprocess.run([*python, "-c", PARSE, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return {f: f"{line}: {msg}" for f, line, msg in (row.split("\t") for row in run.stdout.splitlines())}


def compose_services(root: Path, expected: dict) -> dict[str, dict]:
    """The services of all the compose files, later files' entries over earlier ones' (by name only)."""
    services: dict[str, dict] = {}
    for rel in expected["compose_files"]:
        doc = yaml.safe_load((root / rel).read_text(encoding="utf-8"))
        assert isinstance(doc, dict), f"{rel}: not a YAML mapping"
        for name, service in (doc.get("services") or {}).items():
            services.setdefault(name, {}).update(service or {})
    return services


def test_there_are_fixtures():
    assert len(FIXTURES) >= 4, FIXTURES


@pytest.mark.parametrize("shape", FIXTURES)
def test_expected_has_every_schema_key(shape):
    expected = load(shape)
    missing = missing_keys(expected)
    assert not missing, f"{shape}/expected.yaml lacks: {', '.join(missing)}"
    assert expected["shape"] == shape
    assert set(expected["services"]) == set(expected["llm_services"])
    wrong = []
    for (section, key), allowed in CHOICES.items():
        values = ([s[key] for s in expected["services"].values()] if section == "services"
                  else [expected[section][key]] if expected[section] is not None else [])
        wrong += [f"{section}.{key}={v!r}" for v in values if v not in allowed]
    assert not wrong, f"not one of the schema's choices: {', '.join(wrong)}"


@pytest.mark.parametrize("shape", FIXTURES)
def test_every_path_named_exists(shape):
    root, expected = PROJECTS / shape, load(shape)
    files = [*expected["compose_files"], expected["settings"]["file"], expected["dependency_file"]["path"],
             *(site["file"] for site in expected["llm_call_sites"]), "README.md"]
    dirs = [expected["compose_project_dir"], expected["backend"]["dir"], expected["backend"]["import_root"],
            *(s["build_context"] for s in expected["services"].values() if s["build_context"] is not None)]
    if expected["provider_switch"] is not None:
        files.append(expected["provider_switch"]["file"])
    module = expected["backend"]["app"].split(":")[0].replace(".", "/")
    import_root = root / expected["backend"]["import_root"]
    app_module = next((p for p in (import_root / f"{module}.py", import_root / module / "__init__.py")
                       if p.is_file()), None)
    gone = [f for f in files if not (root / f).is_file()] + [d for d in dirs if not (root / d).is_dir()]
    if app_module is None:
        gone.append(f"{expected['backend']['import_root']}/{module}.py (backend.app)")
    assert not gone, f"{shape}: named in expected.yaml but missing: {', '.join(gone)}"


@pytest.mark.parametrize("shape", FIXTURES)
def test_call_site_and_switch_lines_name_their_class_and_variable(shape):
    root, expected = PROJECTS / shape, load(shape)
    for site in expected["llm_call_sites"]:
        text = line_of(root, site["file"], site["line"])
        assert re.search(rf"\b{re.escape(site['class'])}\s*\(", text), \
            f"{site['file']}:{site['line']} does not construct {site['class']}: {text.strip()!r}"
    switch = expected["provider_switch"]
    if switch is not None:
        text = line_of(root, switch["file"], switch["line"])
        # The variable is an env name (LLM_PROVIDER); the code may spell it as a field (llm_provider).
        assert switch["variable"].lower() in text.lower(), \
            f"{switch['file']}:{switch['line']} does not read {switch['variable']}: {text.strip()!r}"
        # ... and it is where the switch happens: a lookup keyed by it (dict) or a branch on it (if_chain).
        var = re.escape(switch["variable"])
        branch = {"dict": rf"\[[^\]]*{var}|\.get\([^)]*{var}", "if_chain": r"\b(if|elif|match|case)\b"}
        where = f"{switch['file']}:{switch['line']}"
        assert re.search(branch[switch["style"]], text, re.I), \
            f"{where} is no {switch['style']} switch on {switch['variable']}: {text.strip()!r}"
        code = "\n".join(p.read_text(encoding="utf-8") for p in source_files(shape))
        absent = [v for v in switch["values"] if not re.search(rf"""["']{re.escape(v)}["']""", code, re.I)]
        assert not absent, f"provider values never written as strings in the backend: {absent}"


@pytest.mark.parametrize("shape", FIXTURES)
def test_every_llm_construction_is_a_listed_call_site(shape):
    """llm_call_sites is every place an LLM client object is constructed: none left out."""
    root, expected = PROJECTS / shape, load(shape)
    listed = {(s["file"], s["line"]) for s in expected["llm_call_sites"]}
    found = set()
    for path in source_files(shape):
        rel, text = str(path.relative_to(root)), path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(text)
        except SyntaxError:  # a 3.12-only file on an older Python: fall back to the text
            found |= {(rel, n) for n, line in enumerate(text.splitlines(), 1)
                      if not line.lstrip().startswith("#")
                      and re.search(rf"\b({'|'.join(LLM_CLASSES)})\s*\(", line)}
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in LLM_CLASSES:
                    found.add((rel, node.lineno))
    assert found - listed == set(), f"constructed but not in llm_call_sites: {sorted(found - listed)}"
    assert listed - found == set(), f"in llm_call_sites but no construction there: {sorted(listed - found)}"


@pytest.mark.parametrize("shape", [s for s in FIXTURES if runs_here(s)])
def test_runnable_fixture_parses_here(shape):
    files = source_files(shape)
    assert files
    bad = unparsable([sys.executable], files)
    assert not bad, f"does not parse on {sys.version.split()[0]}: {bad}"


@pytest.mark.parametrize("shape", [s for s in FIXTURES if not runs_here(s)])
def test_python312_fixture_does_not_parse_on_311(shape):
    """runs_here: false is earned: the 3.12-only syntax really is a syntax error on 3.11."""
    python = grammar_311()
    if python is None:
        pytest.skip("no Python 3.11 here to show the fixture's syntax is 3.12-only")
    bad = unparsable(python, source_files(shape))
    assert bad, f"{shape} parses on Python 3.11: runs_here: false is not earned"
    assert tuple(map(int, str(load(shape)["backend"]["python"]).split("."))) >= (3, 12)


@pytest.mark.parametrize("shape", [s for s in FIXTURES if not runs_here(s)])
def test_python312_fixture_parses_with_the_312_grammar(shape):
    python = grammar_312()
    if python is None:
        pytest.skip("no working python3.12 (or newer) on PATH to parse the 3.12-only fixture with")
    bad = unparsable(python, source_files(shape))
    assert not bad, f"does not parse even with the 3.12 grammar: {bad}"


@pytest.mark.parametrize("shape", FIXTURES)
def test_compose_files_load_and_name_the_llm_services(shape):
    root, expected = PROJECTS / shape, load(shape)
    services = compose_services(root, expected)
    absent = [s for s in expected["llm_services"] if s not in services]
    assert not absent, f"llm_services not in {expected['compose_files']}: {absent} (have {sorted(services)})"
    ollama = expected["ollama"]["service"]
    assert ollama is None or ollama in services, f"ollama service {ollama!r} not in the compose files"


@pytest.mark.parametrize("shape", FIXTURES)
def test_compose_service_entries_match_the_compose_file(shape):
    """Where there is one compose file and no include, what expected.yaml says of each LLM service is
    what that file says (merged stacks are resolved by compose itself; not re-implemented here)."""
    root, expected = PROJECTS / shape, load(shape)
    if len(expected["compose_files"]) != 1:
        pytest.skip("several compose files: their merge is compose's to resolve")
    compose_file = root / expected["compose_files"][0]
    doc = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    if "include" in doc:
        pytest.skip("the compose file includes others")
    for name, want in expected["services"].items():
        service = doc["services"][name]
        environment = service.get("environment") or {}
        keys = ([e.split("=", 1)[0] for e in environment] if isinstance(environment, list) else list(environment))
        assert keys == want["env_keys_from_compose"], name
        delivery = {(True, False): "env_file", (False, True): "environment", (True, True): "both"}.get(
            ("env_file" in service, bool(keys)))
        assert delivery == want["env_delivery"], name
        networks = service.get("networks") or ["default"]
        assert sorted(networks) == sorted(want["networks"]), name
        if service.get("network_mode") is None:
            declared = set(doc.get("networks") or {}) | {"default"}
            assert set(want["networks"]) <= declared, f"{name}: networks not declared: {want['networks']}"
        ports = service.get("ports") or []
        if all(isinstance(p, (str, int)) and "$" not in str(p) for p in ports):  # short syntax, no ${...}
            assert [str(p) for p in ports] == want["ports"], name
        test = (service.get("healthcheck") or {}).get("test")
        spellings = [test] if test is None or isinstance(test, str) else [" ".join(test[1:]), " ".join(test)]
        assert want["healthcheck"] in spellings, f"{name}: healthcheck {want['healthcheck']!r}, compose {test!r}"
        build = service.get("build")
        context = build.get("context", ".") if isinstance(build, dict) else build
        resolved = (None if context is None
                    else os.path.relpath((compose_file.parent / context).resolve(), root.resolve()))
        assert resolved == want["build_context"], name


@pytest.mark.parametrize("shape", FIXTURES)
def test_env_file_and_template_exist_as_stated(shape):
    root, expected = PROJECTS / shape, load(shape)
    env_file, template = expected["env_file"], expected["env_template"]
    if env_file is not None:
        assert (root / env_file).is_file(), f"env_file {env_file} is not there"
    if template is not None:
        assert (root / template).is_file(), f"env_template {template} is not there"
        assert env_file is None, "env_template is for when only the template ships, yet env_file is set"
        beside = (root / template).parent / ".env"
        assert not beside.exists(), f"{beside.relative_to(root)} exists: the template is not all that ships"
    # An env_file a service requires but the repo does not ship is the template shape, and only that.
    services, project_dir = compose_services(root, expected), root / expected["compose_project_dir"]
    for name in expected["llm_services"]:
        entries = services[name].get("env_file") or []
        for entry in [entries] if isinstance(entries, (str, dict)) else entries:
            path, required = ((entry["path"], entry.get("required", True)) if isinstance(entry, dict)
                              else (entry, True))
            if required and "$" not in path and not (project_dir / path).is_file():
                assert env_file is None and template is not None, \
                    f"{name}'s env_file {path} is not shipped, yet expected.yaml names no env_template"


@pytest.mark.parametrize("shape", FIXTURES)
def test_settings_and_dependency_file_say_what_expected_says(shape):
    root, expected = PROJECTS / shape, load(shape)
    settings = expected["settings"]
    text = (root / settings["file"]).read_text(encoding="utf-8")
    if settings["class"] is not None:
        assert re.search(rf"^class {re.escape(settings['class'])}\b", text, re.M), settings["class"]
    for name in (settings["ollama_url_name"], settings["ollama_model_name"]):
        assert re.search(rf"\b{re.escape(name)}\b", text), f"{name} not in {settings['file']}"
    if settings["env_prefix"]:
        assert settings["env_prefix"] in text
    if settings["style"] in ("pydantic_v2", "pydantic_v1"):
        says_true = re.search(r"case_sensitive\s*[=:]\s*True", text) is not None
        assert says_true == settings["case_sensitive"], f"case_sensitive: {settings['file']} says {says_true}"
    dep = expected["dependency_file"]
    dep_path = root / dep["path"]
    if dep["kind"] == "requirements":
        assert dep_path.suffix == ".txt"
    elif dep["kind"] in ("pep621", "poetry"):
        data = tomllib.loads(dep_path.read_text(encoding="utf-8"))
        if dep["kind"] == "pep621":
            assert "dependencies" in data.get("project", {}), f"{dep['path']}: no [project] dependencies"
        else:
            assert "dependencies" in data.get("tool", {}).get("poetry", {}), f"{dep['path']}: no poetry deps"
    else:
        assert dep_path.name == "Pipfile"
