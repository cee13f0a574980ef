"""Prompt files: JSONL with one {"prompt": "…"} or {"messages": [{"role": …, "content": …}, …]} per line.

`bench --prompts` and phase3's `--prompt-file` read them with this one parser, so a file one accepts the
other accepts too, and a bad line gets the same message (naming file:line) from both.
"""

from __future__ import annotations

import json
from pathlib import Path

from migrator.core.errors import ConfigError

LINE_SHAPE = '{"prompt": …} or {"messages": […]}'


def parse_line(item) -> list[dict]:
    """One line's chat messages; a bare prompt is one user message. ValueError if it has neither shape."""
    if isinstance(item, dict) and "messages" in item:
        messages = item["messages"]
        if isinstance(messages, list) and messages and all(isinstance(m, dict) and "content" in m
                                                           for m in messages):
            return messages
    elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
        return [{"role": "user", "content": item["prompt"]}]
    raise ValueError(item)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"prompt file {path} not found", "give a JSONL file (or, to --prompt-file, text)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"prompt file {path} is not UTF-8 ({exc.reason} at byte {exc.start})",
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read prompt file {path}: {exc.strerror or exc}", "check the path") from None


def read_prompt_file(path: Path) -> list[list[dict]]:
    """phase3's --prompt-file: a .jsonl file as read_jsonl_prompts reads it; any other file is one prompt."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl_prompts(path)
    return [[{"role": "user", "content": _read(path)}]]


def read_jsonl_prompts(path: Path) -> list[list[dict]]:
    """Every prompt in a JSONL file, as chat messages; blank lines are skipped. ConfigError for a file
    that cannot be read, a line that is not one of the two shapes (naming file:line), or no prompt at all."""
    path = Path(path)
    text = _read(path)
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompts.append(parse_line(json.loads(line)))
        except ValueError:
            raise ConfigError(f"{path}:{n} is not {LINE_SHAPE}", "fix that line") from None
    if not prompts:
        raise ConfigError(f"{path} has no prompts", f"one JSON object per line: {LINE_SHAPE}")
    return prompts
