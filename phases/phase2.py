"""phase2 — backend wiring: can the backend switch its LLM by LLM_BACKEND?

Read-only checks of the backend's source, parsed with `ast` (the user's modules are never imported
or run). Scaffolding the missing pieces from templates is issue 6's remaining work.
"""

from __future__ import annotations

import ast
from pathlib import Path

from migrator.config import Settings
from migrator.engine import Context, Outcome, Phase, Step

SETTINGS_FIELDS = ("llm_backend", "vllm_base_url", "vllm_model")


def _parse(path: Path) -> ast.Module | Outcome:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        return Outcome.failed(f"{path} not found", "set backend.dir / backend.config_module in migrate.yaml")
    except SyntaxError as exc:
        return Outcome.failed(f"{path} does not parse (line {exc.lineno})", "fix the syntax error first")


class SettingsFields(Step):
    id = "phase2.settings"
    title = "settings declare llm_backend, vllm_base_url, vllm_model"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.config_module
        tree = _parse(path)
        if isinstance(tree, Outcome):
            return tree
        declared = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        declared.add(item.target.id)
        missing = [f for f in SETTINGS_FIELDS if f not in declared]
        if missing:
            return Outcome.failed(f"{path.name} lacks {', '.join(missing)}",
                                  "add them to the settings class (plan §5.4)")
        return Outcome.passed(f"{path.name} declares {', '.join(SETTINGS_FIELDS)}")


class OpenAIClient(Step):
    id = "phase2.llm"
    title = "LLM factory has ChatOpenAI(base_url=…) chosen by llm_backend"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        path = ctx.path(b.dir) / b.llm_module
        tree = _parse(path)
        if isinstance(tree, Outcome):
            return tree
        has_openai = has_switch = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name == "ChatOpenAI" and any(k.arg == "base_url" for k in node.keywords):
                    has_openai = True
            if isinstance(node, ast.Compare):
                names = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
                         for n in ast.walk(node)}
                if "llm_backend" in names:
                    has_switch = True
        missing = [what for what, ok in (("ChatOpenAI(base_url=…)", has_openai),
                                          ("a choice on llm_backend", has_switch)) if not ok]
        if missing:
            return Outcome.failed(f"{path.name} lacks {' and '.join(missing)}", "see plan §5.5")
        return Outcome.passed(f"{path.name} selects ChatOpenAI by llm_backend")


class Requirement(Step):
    id = "phase2.requirements"
    title = "langchain-openai is a dependency"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        b = ctx.settings.backend
        candidates = [ctx.path(b.dir) / b.requirements, ctx.path(b.dir) / "pyproject.toml"]
        for path in candidates:
            try:
                text = path.read_text(encoding="utf-8").lower().replace("_", "-")
            except FileNotFoundError:
                continue
            if "langchain-openai" in text:
                return Outcome.passed(f"listed in {path.name}")
        return Outcome.failed(f"langchain-openai is not in {candidates[0].name}",
                              f"add `langchain-openai` to {candidates[0]}")


def build(settings: Settings, options: dict) -> Phase:
    return Phase("phase2", "backend wiring", [SettingsFields(), OpenAIClient(), Requirement()])
