"""One table of how a status looks, for the progress lines (stderr) and the tables (stdout) alike."""

from __future__ import annotations

# status -> (mark in a progress line, rich style); a status not listed gets "·" and no style.
STATUS = {
    "passed": ("✓", "green"), "ok": ("✓", "green"), "satisfied": ("=", "green"), "completed": ("✓", "green"),
    "failed": ("✗", "red"), "missing": ("✗", "red"), "interrupted": ("✗", "red"),
    "warn": ("!", "yellow"), "in_progress": ("…", "yellow"), "applying": ("…", "yellow"),
    "running": ("…", None), "would run": ("→", "cyan"), "would check": ("?", "cyan"),
    "rolled_back": ("↩", "magenta"), "skipped": ("-", None), "pending": ("·", "dim"),
}


def mark(status: str) -> str:
    return STATUS.get(status, ("·", None))[0]


def style(status: str) -> str | None:
    return STATUS.get(status, ("·", None))[1]
