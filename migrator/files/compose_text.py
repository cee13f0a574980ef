"""Text edits of compose-related files that keep every other byte: COMPOSE_FILE's list in the env file,
and the vLLM service placed inside the user's own compose file (`phase3 --inline`; never a YAML round trip)."""

from __future__ import annotations

import os
from pathlib import Path

from migrator.core.errors import CheckFailed

VLLM_COMPOSE_NAME = "docker-compose.vllm.yml"


def compose_path_separator(env=None) -> str:
    """COMPOSE_FILE's separator as compose reads it: COMPOSE_PATH_SEPARATOR from the environment, else from
    the project's env file, else the platform's (`:` on Linux and macOS, `;` on Windows)."""
    return os.environ.get("COMPOSE_PATH_SEPARATOR") or (env.get("COMPOSE_PATH_SEPARATOR") if env is not None
                                                        else None) or os.pathsep


def compose_run_dir(env_path: Path, compose_path: Path) -> Path:
    """Where `docker compose` runs when COMPOSE_FILE in this env file is what it loads — the directory its
    entries are relative to (compose resolves them against its working directory, whatever
    `--project-directory` or `--env-file` say). Compose reads a `.env` by itself only from the directory it
    runs in, so that is the `.env`'s own; any other env file is read only through `--env-file`, given (as
    the tool does) from the user's compose file's directory."""
    return env_path.parent if env_path.name == ".env" else compose_path.parent


def _spelled(path: Path, run_dir: Path) -> str:
    return Path(os.path.relpath(path, run_dir)).as_posix()


def resolve_compose_file(value: str, sep: str, run_dir: Path) -> list[tuple[str, Path]]:
    """Each COMPOSE_FILE entry with the file compose loads for it: relative to where compose runs."""
    return [(entry, Path(os.path.normpath(run_dir / entry))) for entry in value.split(sep) if entry]


def compose_file_value(current: str | None, user_files: list[Path], vllm_file: Path, run_dir: Path,
                       sep: str = ":") -> str:
    """COMPOSE_FILE naming the user's compose files (their override too: a COMPOSE_FILE turns compose's
    automatic loading of it off) and then the vLLM one (once), each spelled relative to `run_dir`, joined
    by `sep`. An existing entry that names one of those files by a path that resolves elsewhere (bare names
    an older graphrag-migrate wrote beside a `.env` that is not beside the compose file) is corrected."""
    wanted = [Path(os.path.abspath(f)) for f in [*user_files, vllm_file]]
    by_name = {f.name: f for f in wanted}
    entries: list[str] = []
    resolved: list[Path] = []
    start = current if current else sep.join(_spelled(f, run_dir) for f in wanted[:-1])
    for entry, path in resolve_compose_file(start, sep, run_dir):
        if path not in wanted and not path.exists() and Path(entry).name in by_name:
            path = by_name[Path(entry).name]
            entry = _spelled(path, run_dir)
        if path not in resolved:
            entries.append(entry)
            resolved.append(path)
    if wanted[-1] not in resolved:
        entries.append(_spelled(wanted[-1], run_dir))
    return sep.join(entries)


def without_vllm_compose(env):
    """The inverse, for rollback: (env with the vLLM file out of COMPOSE_FILE, the entry taken out or "")."""
    value, sep = env.get("COMPOSE_FILE"), compose_path_separator(env)
    entries = [entry for entry in (value or "").split(sep) if entry]
    dropped = [entry for entry in entries if Path(entry).name == VLLM_COMPOSE_NAME]
    if value is None or not dropped:
        return env, ""
    rest = [entry for entry in entries if entry not in dropped]
    return (env.set("COMPOSE_FILE", sep.join(rest)) if rest else env.unset("COMPOSE_FILE")), dropped[0]


def inline_service(user_text: str, rendered: str, service: str) -> str:
    """The user's compose text with the rendered vLLM service added under its `services:` — comments,
    order and every other byte kept (never a YAML round trip). Refuses what it cannot place safely."""
    import re

    if re.search(rf"^  {re.escape(service)}:\s*$|^  \"{re.escape(service)}\":\s*$", user_text, re.M):
        return user_text if "org.graphrag-migrate.managed" in user_text else _refuse(
            f"service '{service}' already exists in your compose file", "rename vllm.service_name, or drop --inline")
    lines = user_text.splitlines(keepends=True)
    starts = [i for i, ln in enumerate(lines) if re.match(r"^services:\s*(#.*)?$", ln)]
    if len(starts) != 1:
        return _refuse("cannot find one top-level 'services:' block in your compose file",
                       "use the separate file (phase3 without --inline)")
    end = next((i for i in range(starts[0] + 1, len(lines)) if re.match(r"^[^\s#]", lines[i])), len(lines))
    while end > starts[0] + 1 and not lines[end - 1].strip():
        end -= 1
    block = rendered.split("\nservices:\n", 1)[1]
    service_block, _, rest = block.partition("\nnetworks:\n")
    newline = "\r\n" if user_text.count("\r\n") * 2 > user_text.count("\n") else "\n"
    insert = ["  # --- added by graphrag-migrate phase3 --inline (rollback removes it) ---" + newline]
    insert += [ln + newline for ln in service_block.rstrip("\n").split("\n")]
    if lines and not lines[end - 1].endswith(("\n", "\r\n")):
        lines[end - 1] += newline
    result = "".join(lines[:end] + insert + lines[end:])
    for line in rest.strip().splitlines():  # the service's networks must exist in the user's file (they are theirs)
        network = line.strip().split(":")[0].strip().strip('"')
        if not re.search(rf"^networks:\s*$[\s\S]*?^  \"?{re.escape(network)}\"?:", result, re.M):
            return _refuse(f"network '{network}' is not declared in your compose file",
                           "declare it under networks:, or use vllm.network_mode: host")
    return result


def _refuse(message: str, fix: str):
    raise CheckFailed(message, fix)


def service_key_lines(paths, service: str, key: str | None = None, entry: str | None = None) -> list[tuple[str, int]]:
    """(file, line) of `services.<service>` — or of its `<key>`, or with `entry` of that variable inside its
    `environment:` (list or mapping) — in each compose file that spells it, `include:`s followed. Read
    with YAML's node marks, never rebuilt: the operator is shown the line to change."""
    import os

    import yaml

    found: list[tuple[str, int]] = []
    seen: set[str] = set()

    def child(node, name):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if getattr(k, "value", None) == name:
                    return k, v
        return None, None

    def visit(path: str) -> None:
        if path in seen or not os.path.isfile(path):
            return
        seen.add(path)
        try:
            with open(path, encoding="utf-8") as f:
                root = yaml.compose(f, Loader=yaml.SafeLoader)
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            return
        _, includes = child(root, "include")
        for item in includes.value if isinstance(includes, yaml.SequenceNode) else []:
            target = item if isinstance(item, yaml.ScalarNode) else child(item, "path")[1]
            for p in (target.value if isinstance(target, yaml.SequenceNode) else [target]) if target else []:
                if isinstance(p, yaml.ScalarNode):
                    visit(os.path.normpath(os.path.join(os.path.dirname(path), p.value)))
        _, services = child(root, "services")
        service_node, spec = child(services, service)
        if key is None:
            found.extend([(path, service_node.start_mark.line + 1)] if service_node is not None else [])
            return
        key_node, value = child(spec, key)
        if key_node is None:
            return
        if entry is None:
            found.append((path, key_node.start_mark.line + 1))
        elif isinstance(value, yaml.MappingNode):
            k, _ = child(value, entry)
            if k is not None:
                found.append((path, k.start_mark.line + 1))
        elif isinstance(value, yaml.SequenceNode):
            found.extend((path, item.start_mark.line + 1) for item in value.value
                         if isinstance(item, yaml.ScalarNode) and item.value.partition("=")[0] == entry)

    for p in paths:
        visit(str(p))
    return found
