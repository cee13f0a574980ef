"""Jinja templates (`templates/` in the repo, `migrator/templates` in the wheel), rendered safely.

Every value goes through the `q` filter: a JSON string is a valid YAML double-quoted scalar, so no
value (a model name, a path, a flag) can break the YAML or add keys; `$` is doubled so that compose
does not interpolate it (Kubernetes reads `$$` in args and env values as `$` too, so `$(VAR)` stays
literal there). Intended `${VAR}` references are written by the templates themselves. The `j` filter is the
same JSON string without the doubling, for fields nothing interpolates (Kubernetes names and labels).
"""

from __future__ import annotations

import json
from pathlib import Path


def templates_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here.parents[1] / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("graphrag-migrate's templates directory is missing from the installation")


def quote(value) -> str:
    return json.dumps(str(value), ensure_ascii=False).replace("$", "$$")


def render(name: str, **values) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)
    env.filters["q"] = quote
    env.filters["j"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    return env.get_template(name).render(**values)
