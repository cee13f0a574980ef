"""The package layout's import rules, checked from the source (an AST walk, not a run): no import cycle,
each layer imports only itself and the layers below it, the simulators import nothing else of the product,
and only the CLI imports the CLI. Function-local and TYPE_CHECKING imports count too: a cycle or a
layer break hidden inside a function is still one."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The product's top-level packages, as directories under the repository root.
PACKAGES = ("migrator", "phases")
# A sample user project shipped as data (the reference GraphRAG backend), not part of the product.
SKIP = ("migrator/app/sample_project",)
# Highest first: a module may import from its own layer and any layer after it in this list, never before.
LAYERS = ("migrator.cli", "migrator.app", "phases", "migrator.bench", "migrator.adapters", "migrator.files",
          "migrator.core")
SIM = "migrator.sim"
CLI = "migrator.cli"

@dataclass(frozen=True)
class Import:
    module: str      # the importing product module
    imported: str    # the product module it imports (resolved: a submodule when it is one)
    file: str        # relative to the scanned root
    line: int

    def __str__(self) -> str:
        return f"{self.module} -> {self.imported} ({self.file}:{self.line})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_files(root: Path) -> dict[str, Path]:
    """Every product module, by dotted name, mapped to its file."""
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(rel == skip or rel.startswith(skip + "/") for skip in SKIP):
                continue
            files[module_name(path, root)] = path
    return files


def resolve(name: str, modules: set[str]) -> str | None:
    """The product module that `import name` loads last: the longest dotted prefix that is a module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, root: Path, modules: set[str]) -> list[Import]:
    """Every product import in one file: `import a.b`, `from a import b` (b a submodule or a name in a),
    relative imports, and importlib.import_module / __import__ with a literal name, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    found: list[Import] = []

    def add(name: str, line: int) -> None:
        target = resolve(name, modules)
        imp = Import(module, target, rel, line)
        if target is not None and target != module and imp not in found:   # `from a import b, c`: once
            found.append(imp)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[:len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source, node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                add(node.args[0].value, node.lineno)
    return found


def collect(root: Path) -> list[Import]:
    files = product_files(root)
    modules = set(files)
    return [imp for module, path in files.items() for imp in imports_of(module, path, root, modules)]


def layer_of(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rule_violations(imports: list[Import]) -> dict[str, list[Import]]:
    """Each broken rule's imports, keyed "module -> imported" (one key per edge, every line kept)."""
    out: dict[str, list[Import]] = {}
    for imp in imports:
        broken = False
        if in_package(imp.module, SIM):
            broken = not in_package(imp.imported, SIM)
        elif in_package(imp.imported, CLI) and not in_package(imp.module, CLI):
            broken = True
        else:
            mine, theirs = layer_of(imp.module), layer_of(imp.imported)
            if mine is not None and theirs is not None:
                broken = theirs < mine      # a lower rank is a higher layer
            elif mine is not None and in_package(imp.imported, SIM):
                broken = False              # the product starts the simulators (tests, rehearse)
            elif imp.imported != "migrator":
                broken = mine is None or theirs is None   # a module in no layer: place it in LAYERS
        if broken:
            out.setdefault(f"{imp.module} -> {imp.imported}", []).append(imp)
    return out


def cycles(imports: list[Import]) -> dict[str, list[Import]]:
    """Each import cycle (a strongly connected set of modules, Tarjan), keyed "cycle: a, b, ...", with
    the imports that form it."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set()).add(imp.imported)
        graph.setdefault(imp.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:    # recursion depth is bounded by the number of modules (~100)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return {"cycle: " + ", ".join(sorted(c)): [i for i in imports if i.module in c and i.imported in c]
            for c in components}


def check(root: Path) -> dict[str, list[Import]]:
    imports = collect(root)
    return {**cycles(imports), **rule_violations(imports)}


def describe(found: dict[str, list[Import]], keys) -> str:
    return "\n".join(f"  {key}:\n" + "\n".join(f"    {imp}" for imp in found.get(key, ()))
                     for key in sorted(keys))


def test_the_product_has_no_import_cycle_or_layer_violation():
    found = check(REPO)
    assert not found, ("imports that break the layer rules (cli > app > phases > bench > adapters > files > "
                       "core; sim imports only sim; only cli imports cli), or cycles:\n" + describe(found, found))


def test_the_walk_sees_the_product():
    """A walk that finds nothing would pass everything: it must see the modules and imports known to exist."""
    imports = collect(REPO)
    edges = {(i.module, i.imported) for i in imports}
    assert ("migrator.cli.main", "migrator.app.api") in edges
    assert ("migrator.sim.ollama", "migrator.sim.vllm") in edges
    assert not any(i.module.startswith("migrator.app.sample_project") for i in imports)
    assert len(product_files(REPO)) > 50 and len({i.module for i in imports}) > 30


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def fake_product(tmp_path):
    """A tiny product with the real layout and only allowed imports, of every kind the walk resolves."""
    write(tmp_path, {
        "migrator/__init__.py": "",
        "migrator/core/__init__.py": "",
        "migrator/core/errors.py": "",
        "migrator/core/config.py": "from . import errors\nfrom .errors import X\n",
        "migrator/files/__init__.py": "",
        "migrator/files/envfile.py": "from migrator.core import errors\n",
        "migrator/adapters/__init__.py": "",
        "migrator/adapters/http.py": "import migrator.core.config\n",
        "migrator/sim/__init__.py": "",
        "migrator/sim/vllm.py": "import json\n",
        "migrator/sim/ollama.py": "from migrator.sim.vllm import WORDS\n",
        "phases/__init__.py": "",
        "phases/phase1.py": "def f():\n    from migrator.adapters import http\n",
        "migrator/app/__init__.py": "",
        "migrator/app/api.py": "import importlib\nimportlib.import_module('phases.phase1')\n",
        "migrator/app/sample_project/main.py": "import migrator.cli.main\n",
        "migrator/cli/__init__.py": "",
        "migrator/cli/main.py": "from migrator.app import api\nfrom ..core import errors\n",
    })
    return tmp_path


def test_the_checker_passes_a_product_that_keeps_the_rules(fake_product):
    imports = {str(i) for i in collect(fake_product)}
    assert "migrator.core.config -> migrator.core.errors (migrator/core/config.py:1)" in imports
    assert "phases.phase1 -> migrator.adapters.http (phases/phase1.py:2)" in imports
    assert "migrator.app.api -> phases.phase1 (migrator/app/api.py:2)" in imports
    assert check(fake_product) == {}


def test_the_checker_reports_a_cycle_made_by_a_function_local_import(fake_product):
    write(fake_product, {"migrator/core/errors.py": "def f():\n    import migrator.core.config\n"})
    found = check(fake_product)
    assert set(found) == {"cycle: migrator.core.config, migrator.core.errors"}
    assert {str(i) for i in found["cycle: migrator.core.config, migrator.core.errors"]} >= {
        "migrator.core.errors -> migrator.core.config (migrator/core/errors.py:2)"}


def test_the_checker_reports_every_forbidden_import_with_its_file_and_line(fake_product):
    write(fake_product, {
        "migrator/core/config.py": "from . import errors\n\ndef gpu():\n    from migrator.adapters import http\n",
        "migrator/sim/vllm.py": "from migrator.core.errors import X\n",
        "phases/phase1.py": "import migrator.cli\nfrom migrator import app\n",
    })
    found = check(fake_product)
    assert {key: {str(i) for i in imps} for key, imps in found.items()} == {
        "migrator.core.config -> migrator.adapters.http":
            {"migrator.core.config -> migrator.adapters.http (migrator/core/config.py:4)"},
        "migrator.sim.vllm -> migrator.core.errors":
            {"migrator.sim.vllm -> migrator.core.errors (migrator/sim/vllm.py:1)"},
        "phases.phase1 -> migrator.cli": {"phases.phase1 -> migrator.cli (phases/phase1.py:1)"},
        "phases.phase1 -> migrator.app": {"phases.phase1 -> migrator.app (phases/phase1.py:2)"},
        # adapters.http imports core.config, which now imports adapters.http back
        "cycle: migrator.adapters.http, migrator.core.config": {
            "migrator.core.config -> migrator.adapters.http (migrator/core/config.py:4)",
            "migrator.adapters.http -> migrator.core.config (migrator/adapters/http.py:1)"},
    }
