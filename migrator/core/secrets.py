"""Keep secrets (HF_TOKEN, API keys) out of state, the audit log and all output.

Everything the tool records or prints about a user's environment passes through `redact`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

MASK = "***"

# Names whose values are secrets wherever they appear (env files, process environment).
# Whole name segments only: HF_TOKEN and VLLM_API_KEY are secrets, max_tokens and prompt_tokens are not.
_SECRET_NAME_RE = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_KEY|CREDENTIALS?|AUTH)($|_)", re.I)
# Token shapes that are secrets even when we do not know the variable's name.
_TOKEN_SHAPES = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}\b"),
]
_KNOWN_VALUES: set[str] = set()


def is_secret_name(name: str) -> bool:
    if name.lower().endswith("_env"):  # names an environment variable, e.g. vllm.api_key_env
        return False
    return bool(_SECRET_NAME_RE.search(name))


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
