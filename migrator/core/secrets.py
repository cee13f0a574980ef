"""Keep secrets (HF_TOKEN, API keys) out of state, the audit log and all output.

Everything the tool records or prints about a user's environment passes through `redact`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

MASK = "***"

# Names whose values are secrets wherever they appear (env files, process environment, recorded dicts).
# A name is cut into segments at _ . - ; a word matches a whole segment or the end of one run together
# (DBPASSWORD, APIKEY, SECRETKEY), never its start (tokenizer, keyboard) and never a plural (max_tokens).
_SECRET_WORDS = ("SECRET", "SECRETS", "PASSWORD", "PASSWD", "PWD", "CREDENTIAL", "CREDENTIALS", "PRIVATE", "AUTH")
# KEY and TOKEN only as the name's last word: num_key_value_heads is model shape, HF_TOKEN_PATH a path.
_LAST_WORDS = ("KEY", "TOKEN")
# The shell's working directories (masking them would hide every path), and a bare "key": the name of a
# setting or field in the tool's own documents (init's undecided keys), not a credential.
_NOT_SECRET_NAMES = {"PWD", "OLDPWD", "KEY"}
# Token shapes that are secrets even when we do not know the variable's name.
_TOKEN_SHAPES = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}\b"),
]
_KNOWN_VALUES: set[str] = set()


def _ends_with_word(segment: str, words: tuple[str, ...]) -> bool:
    return any(segment.endswith(word) for word in words)


def is_secret_name(name: str) -> bool:
    if name.lower().endswith("_env"):  # names an environment variable, e.g. vllm.api_key_env
        return False
    upper = name.upper()
    if upper in _NOT_SECRET_NAMES:
        return False
    segments = [seg for seg in re.split(r"[_.\-]+", upper) if seg]
    while segments and segments[-1].isdigit():  # VLLM_API_KEY_2
        segments.pop()
    if not segments:
        return False
    if any(_ends_with_word(seg, _SECRET_WORDS) for seg in segments):
        return True
    # kv_bytes_per_token is a figure per token, not a token.
    return _ends_with_word(segments[-1], _LAST_WORDS) and not (len(segments) > 1 and segments[-2] == "PER")


def looks_like_secret(value: str) -> bool:
    """Where a setting wants the NAME of a variable: is this the secret itself? An `hf_…`/`sk-…` token,
    or 16+ characters that mix upper case, lower case and digits, or that no variable could be named
    (base64, a JWT)."""
    value = value.strip()
    if any(shape.search(value) for shape in _TOKEN_SHAPES):
        return True
    if len(value) < 16 or any(c.isspace() for c in value):
        return False
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return mixed or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value)


def register_secret(value: str | None) -> None:
    """Remember a secret value so that `redact` masks it wherever it shows up."""
    if value and len(value) >= 4:
        _KNOWN_VALUES.add(value)


def register_from_environ(environ: dict[str, str] | None = None) -> None:
    for name, value in (os.environ if environ is None else environ).items():
        if is_secret_name(name):
            register_secret(value)


def register_from_pairs(pairs: Iterable[tuple[str, str | None]]) -> None:
    for name, value in pairs:
        if is_secret_name(name):
            register_secret(value)


def redact(value: Any) -> Any:
    """Mask secrets in a string, or recursively in lists and dicts (dict keys named like secrets too)."""
    if isinstance(value, str):
        for secret in sorted(_KNOWN_VALUES, key=len, reverse=True):
            value = value.replace(secret, MASK)
        for shape in _TOKEN_SHAPES:
            value = shape.sub(MASK, value)
        return value
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value
