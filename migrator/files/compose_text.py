"""Text edits of compose-related files that keep every other byte: COMPOSE_FILE's list in the env file,
and the vLLM service placed inside the user's own compose file (`phase3 --inline`; never a YAML round trip)."""

from __future__ import annotations

from migrator.core.errors import CheckFailed

VLLM_COMPOSE_NAME = "docker-compose.vllm.yml"


def compose_path_separator(env=None) -> str:
    """COMPOSE_FILE's separator as compose reads it: COMPOSE_PATH_SEPARATOR from the environment, else from
    the project's env file, else the platform's (`:` on Linux and macOS, `;` on Windows)."""
    import os

    return os.environ.get("COMPOSE_PATH_SEPARATOR") or (env.get("COMPOSE_PATH_SEPARATOR") if env is not None
                                                        else None) or os.pathsep


def compose_file_value(current: str | None, user_compose_names: list[str], sep: str = ":") -> str:
    """COMPOSE_FILE naming the user's compose files (their override too: a COMPOSE_FILE turns compose's
    automatic loading of it off) and then the vLLM one (once), joined by `sep`."""
    entries = [e for e in (current or sep.join(user_compose_names)).split(sep) if e]
    if VLLM_COMPOSE_NAME not in entries:
        entries.append(VLLM_COMPOSE_NAME)
    return sep.join(entries)


def without_vllm_compose(env):
    """The inverse, for rollback: (env with the vLLM file out of COMPOSE_FILE, the name taken out or "")."""
    value, sep = env.get("COMPOSE_FILE"), compose_path_separator(env)
    if value is None or VLLM_COMPOSE_NAME not in value.split(sep):
        return env, ""
    rest = [entry for entry in value.split(sep) if entry and entry != VLLM_COMPOSE_NAME]
    return (env.set("COMPOSE_FILE", sep.join(rest)) if rest else env.unset("COMPOSE_FILE")), VLLM_COMPOSE_NAME


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
