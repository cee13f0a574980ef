"""A lossless .env editor.

Setting a key rewrites only the bytes of that key's value. Comments (an inline one on the same line
included), blank lines, order, `export` prefixes, quoting style and CRLF line endings stay as they
were. python-dotenv's `set_key` does not do this (it re-quotes, drops the inline comment, appends when
the key is only commented out), hence this module.

A value is written so that Docker Compose and python-dotenv read back the same string:
unquoted when it is plain, in single quotes when it holds spaces, `#` or `$` (both read single
quotes literally), in double quotes (escaping only `\\` and `"`) when it holds a single quote. A value
with both `'` and `$`, or a newline, has no such form and is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migrator.core.errors import ConfigError

_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_ASSIGN_RE = re.compile(rf"[ \t]*(?:export[ \t]+)?(?P<key>{_KEY})[ \t]*=[ \t]*")
_COMMENTED_RE = re.compile(rf"[ \t]*#[ \t]*(?:export[ \t]+)?(?P<key>{_KEY})[ \t]*=")
_PLAIN_RE = re.compile(r"^[A-Za-z0-9_./:@+,=%~-]*$")


@dataclass
class _Entry:
    key: str
    value_start: int  # offsets into the text of the value's raw form, quotes included
    value_end: int
    quote: str  # "'", '"' or ""
    value: str


@dataclass
class _Line:
    start: int
    end: int  # offset after the line ending
    body_end: int  # offset before the line ending


def _lines(text: str) -> list[_Line]:
    out, pos = [], 0
    while pos < len(text):
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl + 1
        body_end = end - 1 if nl >= 0 else end
        if body_end > pos and text[body_end - 1] == "\r" and nl >= 0:
            body_end -= 1
        out.append(_Line(pos, end, body_end))
        pos = end
    return out


def _unescape_double(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), raw)


def encode_value(value: str, prefer: str = "") -> tuple[str, str]:
    """(raw text, quote) for `value`, keeping the quote style `prefer` when it can hold the value."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ConfigError(f"env value {value[:20]!r}… contains a line break", "use a single-line value")
    can_plain = bool(_PLAIN_RE.match(value))
    can_single = "'" not in value
    can_double = "$" not in value
    if prefer == "" and can_plain:
        return value, ""
    if prefer == "'" and can_single:
        return f"'{value}'", "'"
    if prefer == '"' and can_double:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', '"'
    if can_plain:
        return value, ""
    if can_single:
        return f"'{value}'", "'"
    if can_double:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', '"'
    raise ConfigError(
        "env value holds both ' and $, which Docker Compose and python-dotenv read differently",
        "drop one of the two characters",
    )


class EnvFile:
    """A parsed .env file that remembers every byte of its text."""

    def __init__(self, text: str):
        self.text = text
        self._lines = _lines(text)
        self.entries = self._parse()

    @classmethod
    def from_bytes(cls, data: bytes) -> "EnvFile":
        return cls(data.decode("utf-8", errors="surrogateescape"))

    def to_bytes(self) -> bytes:
        return self.text.encode("utf-8", errors="surrogateescape")

    def _parse(self) -> list[_Entry]:
        entries: list[_Entry] = []
        text = self.text
        i = 0
        while i < len(self._lines):
            line = self._lines[i]
            m = _ASSIGN_RE.match(text, line.start, line.body_end)
            i += 1
            if not m:
                continue
            start = m.end()
            first = text[start] if start < line.body_end else ""
            if first in ("'", '"'):
                # A quoted value ends at its closing quote, which may be on a later line.
                j, escaped = start + 1, False
                while j < len(text):
                    ch = text[j]
                    if first == '"' and ch == "\\" and not escaped:
                        escaped = True
                    elif ch == first and not escaped:
                        break
                    else:
                        escaped = False
                    j += 1
                if j >= len(text):  # unterminated: take the rest of the line as is
                    entries.append(_Entry(m["key"], start, line.body_end, "", text[start:line.body_end]))
                    continue
                inner = text[start + 1 : j]
                value = _unescape_double(inner) if first == '"' else inner
                entries.append(_Entry(m["key"], start, j + 1, first, value))
                while i < len(self._lines) and self._lines[i].start <= j:
                    i += 1
            else:
                body = text[start : line.body_end]
                cut = re.search(r"[ \t]#", body)
                raw = body[: cut.start()] if cut else body
                raw = raw.rstrip(" \t")
                entries.append(_Entry(m["key"], start, start + len(raw), "", raw))
        return entries

    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    def get(self, key: str) -> str | None:
        """The value the last assignment of `key` gives (as Compose and python-dotenv read it)."""
        found = [e for e in self.entries if e.key == key]
        return found[-1].value if found else None

    def _newline(self) -> str:
        crlf = self.text.count("\r\n")
        return "\r\n" if crlf and crlf >= self.text.count("\n") - crlf else "\n"

    def set(self, key: str, value: str) -> "EnvFile":
        """A new EnvFile with `key` set to `value`, every other byte unchanged."""
        if not re.fullmatch(_KEY, key):
            raise ConfigError(f"'{key}' is not a valid env variable name", "use letters, digits and _")
        found = [e for e in self.entries if e.key == key]
        text = self.text
        if found:
            # Rewrite every assignment so that no reader, whichever one it honours, sees the old value.
            for entry in reversed(found):
                raw, _ = encode_value(value, prefer=entry.quote)
                text = text[: entry.value_start] + raw + text[entry.value_end :]
            return EnvFile(text)
        raw, _ = encode_value(value)
        new_line = f"{key}={raw}"
        newline = self._newline()
        for line in self._lines:
            m = _COMMENTED_RE.match(text, line.start, line.body_end)
            if m and m["key"] == key:
                # Next to its commented-out example, so the file still reads in order.
                if line.end == line.body_end:  # the last line, without a line ending
                    insert = newline + new_line
                else:
                    insert = new_line + text[line.body_end : line.end]
                return EnvFile(text[: line.end] + insert + text[line.end :])
        if text and not text.endswith("\n"):
            text += newline
        return EnvFile(text + new_line + newline)

    def unset(self, key: str) -> "EnvFile":
        """Remove the lines that assign `key` (used to undo a key the tool added)."""
        drop = set()
        for line in self._lines:
            m = _ASSIGN_RE.match(self.text, line.start, line.body_end)
            if m and m["key"] == key:
                drop.add(line.start)
        kept = [self.text[ln.start : ln.end] for ln in self._lines if ln.start not in drop]
        return EnvFile("".join(kept))


def read_project_env(ctx) -> "EnvFile | None":
    """The project's env file (as planned edits left it, in dry-run), or None if absent."""
    data = ctx.writer.read(ctx.env_path)
    return None if data is None else EnvFile.from_bytes(data)


ENV_TEMPLATES = (".env.example", ".env.template", "env.example")


def missing_env_file(project, env_path) -> "tuple[str, str] | None":
    """(what is wrong, the fix) when the env file migrate.yaml names is not there — with the copy to
    make when only a template was shipped beside it — else None. Read-only: phase3 and status ask it
    first, so that nothing is written for a project whose env file does not exist yet."""
    import os
    from pathlib import Path

    project, env_path = Path(project), Path(env_path)
    if os.path.exists(env_path):  # a symlink to a missing file is missing too
        return None

    def shown(path: Path) -> str:
        try:
            return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(project)))
        except ValueError:
            return str(path)

    templates = [env_path.parent / name for name in ENV_TEMPLATES if (env_path.parent / name).is_file()]
    if templates:
        template = shown(templates[0])
        return (f"env file {shown(env_path)} not found (only the template {template} is there)",
                f"cp {template} {shown(env_path)} (in {project}) and fill it in, or set project.env_file "
                "to your env file")
    return (f"env file {shown(env_path)} not found",
            "create it (your backend's settings, LLM_BACKEND included), or set project.env_file to your env file")
