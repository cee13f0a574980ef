"""Domain errors and exit codes.

The core raises these; the CLI turns them into one message and one exit code, in one place
(`migrator.cli._common.run_command`). Every error names the thing that is wrong and the fix.
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; the README documents the same table."""

    OK = 0
    CHECK_FAILED = 1  # a check or gate failed, something is missing, or drift was found
    USAGE = 2  # bad command line or bad migrate.yaml value
    ENVIRONMENT = 3  # something the step needs is not there: Docker daemon down, server unreachable
    LOCKED = 4  # another graphrag-migrate run holds the project lock
    STATE = 5  # the ledger (.graphrag-migrate/state.json) is corrupt or unreadable
    INTERNAL = 70  # a bug: please report it with the audit log
    INTERRUPTED = 130  # Ctrl-C / SIGTERM


class MigrateError(Exception):
    """Base of every error the user can act on: a one-line message and the fix."""

    exit_code: ExitCode = ExitCode.CHECK_FAILED

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message

    def __str__(self) -> str:
        return self.one_line()


class ConfigError(MigrateError):
    exit_code = ExitCode.USAGE


class EnvironmentMissing(MigrateError):
    exit_code = ExitCode.ENVIRONMENT


class DockerUnavailable(EnvironmentMissing):
    pass


class LockedError(MigrateError):
    exit_code = ExitCode.LOCKED


class StateCorrupt(MigrateError):
    exit_code = ExitCode.STATE


class CheckFailed(MigrateError):
    exit_code = ExitCode.CHECK_FAILED


class BackupMismatch(CheckFailed):
    """A backup whose sha256 is not the one recorded when it was taken: it is never restored."""


class Interrupted(MigrateError):
    exit_code = ExitCode.INTERRUPTED


# What an operator does about an ordinary OS failure, by errno. A bug is exit 70; these are not bugs.
_OS_FIXES = {
    "EPERM": "check the file's attributes and permissions (`lsattr`, `ls -l`: an immutable file refuses even "
             "root; `chattr -i` lifts it), then re-run",
    "EACCES": "check the permissions of the file and its directories (`ls -ld`), or run as the file's owner, "
              "then re-run",
    "EISDIR": "a directory stands where a file is expected: move it aside (or fix the path in migrate.yaml), "
              "then re-run",
    "ENOTDIR": "a part of the path is a file, not a directory: fix the path, then re-run",
    "ENOSPC": "free space on that file system (`df -h`), then re-run",
    "EDQUOT": "the disk quota is used up: free space or raise the quota, then re-run",
    "EROFS": "that file system is read-only: remount it read-write (or work on a writable copy), then re-run",
    "ENAMETOOLONG": "the path is too long for the file system: use a shorter project path or file name",
    "ENOENT": "it, or a directory on its path, is missing: fix the path (migrate.yaml), then re-run",
    "EMFILE": "too many open files: raise `ulimit -n`, then re-run",
    "ENFILE": "the system is out of file handles: close other programs, then re-run",
    "EIO": "the disk reports an I/O error: check it (`dmesg`) before anything else",
    "EBUSY": "the file is in use (a mount point?): free it, then re-run",
    "ETXTBSY": "the file is being executed: stop what runs it, then re-run",
}


def _short_path(path: object, limit: int = 160) -> str:
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]}"


def from_os_error(exc: OSError, doing: str = "", path: object = None) -> EnvironmentMissing:
    """An ordinary OS failure (permissions, full disk, read-only file system, a directory in a file's place)
    as the environment error it is: one line naming the file, the errno in words and the fix. Mapped here
    once, so that only a real bug ever reaches the CLI as "internal error" (exit 70)."""
    name = errno.errorcode.get(exc.errno or 0, "")
    words = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    where = path if path is not None else exc.filename
    target = f" {_short_path(where)}" if where is not None else ""
    if path is None and exc.filename2 is not None:
        target += f" → {_short_path(exc.filename2)}"
    why = f"{words}{f' ({name})' if name else ''}"
    message = f"{doing}{target} failed: {why}" if doing else (f"{target.strip()}: {why}" if target else why)
    return EnvironmentMissing(message, _OS_FIXES.get(name, "check the file and the disk, then re-run"))
