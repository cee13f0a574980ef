"""Domain errors and exit codes.

The core raises these; the CLI turns them into one message and one exit code, in one place
(`migrator.cli._common.run_command`). Every error names the thing that is wrong and the fix.
"""

from __future__ import annotations

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


class Interrupted(MigrateError):
    exit_code = ExitCode.INTERRUPTED
