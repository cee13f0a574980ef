"""A rich progress display that huggingface_hub drives through its `tqdm_class` hook.

snapshot_download creates its bars (bytes downloaded, files done) from the class it is given and
only calls a small part of tqdm's interface; this adapter maps that part onto one rich `Progress`
on stderr (transient, so a one-line summary replaces it when done).
"""

from __future__ import annotations

import threading
from typing import Any


def rich_tqdm(progress) -> type:
    """A tqdm-compatible class whose bars are tasks of `progress` (a started rich.progress.Progress)."""

    class RichTqdm:
        _lock = threading.RLock()

        def __init__(self, iterable=None, *args: Any, desc: str | None = None, total: float | None = None,
                     initial: float = 0, disable: bool = False, unit: str = "it", **kwargs: Any):
            self.iterable = iterable
            self.n = initial or 0
            self._total = total
            self.unit = unit
            self.disable = disable
            self.format_dict: dict = {"rate": None}
            self.task = progress.add_task(desc or "", total=total or None, completed=self.n)

        @property
        def total(self):
            return self._total

        @total.setter
        def total(self, value):
            self._total = value
            progress.update(self.task, total=value or None)

        def __iter__(self):
            for item in self.iterable or []:
                yield item
                self.update(1)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def update(self, n: float | None = 1) -> None:
            self.n += n or 0
            progress.update(self.task, completed=self.n)

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            progress.refresh()

        def set_description_str(self, desc: str = "", refresh: bool = True) -> None:
            progress.update(self.task, description=desc)

        def set_description(self, desc: str = "", refresh: bool = True) -> None:
            self.set_description_str(desc)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            pass

        def close(self) -> None:
            pass

        @classmethod
        def get_lock(cls):
            return cls._lock

        @classmethod
        def set_lock(cls, lock) -> None:
            cls._lock = lock

    return RichTqdm


def byte_progress(console):
    """A transient rich Progress for downloads, on the given (stderr) console."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)
