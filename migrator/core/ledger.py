"""The migration ledger: what was done, to which files, and how to undo it.

`<project>/.graphrag-migrate/` holds
  state.json   current state (phases, steps, files, resources), replaced atomically on every save;
  audit.jsonl  append-only history: one JSON line per action, with file checksums before and after;
  backups/     a copy of each user file taken before the tool first changed it;
  lock         the id of the run that holds the project.

Nothing here is written by `--check`, `--dry-run` or `status`: they open the ledger read-only.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from migrator.core.errors import LockedError, StateCorrupt
from migrator.core.secrets import redact

STATE_DIRNAME = ".graphrag-migrate"
SCHEMA_VERSION = 1


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    try:
        return sha256_bytes(path.read_bytes())
    except FileNotFoundError:
        return None


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def empty_state() -> dict:
    return {"schema": SCHEMA_VERSION, "phases": {}, "files": {}, "resources": {}}


@dataclass
class LockInfo:
    id: str
    pid: int
    host: str
    started_at: str
    command: str

    def describe(self) -> str:
        return f"lock {self.id} (pid {self.pid} on {self.host}, '{self.command}', since {self.started_at})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """State, audit log, backups and the lock of one project."""

    def __init__(self, project: Path):
        self.project = project
        self.root = project / STATE_DIRNAME
        self.state_path = self.root / "state.json"
        self.audit_path = self.root / "audit.jsonl"
        self.backups = self.root / "backups"
        self.lock_path = self.root / "lock"
        self.state: dict = empty_state()
        self.command = ""
        self._lock: LockInfo | None = None

    # ---- state -------------------------------------------------------------------------------
    def read_state(self) -> dict:
        """The state on disk; StateCorrupt when it cannot be read. Never writes."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return empty_state()
        except OSError as exc:
            raise StateCorrupt(
                f"cannot read {self.state_path}: {exc.strerror}",
                "fix its permissions, or run `graphrag-migrate rollback` to go back to Ollama",
            ) from None
        try:
            state = json.loads(raw)
            if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
                raise ValueError("not a graphrag-migrate state of schema 1")
            for key in ("phases", "files", "resources"):
                if not isinstance(state.get(key), dict):
                    raise ValueError(f"'{key}' is missing")
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise StateCorrupt(
                f"{self.state_path} is corrupt ({str(exc)[:80]})",
                "run `graphrag-migrate rollback` (it works without state) — it sets the corrupt file aside",
            ) from None
        return state

    def load(self) -> dict:
        self.state = self.read_state()
        return self.state

    def save(self) -> None:
        data = json.dumps(redact(self.state), indent=2, sort_keys=True).encode() + b"\n"
        atomic_write_bytes(self.state_path, data)

    def quarantine_state(self) -> Path | None:
        """Move an unreadable state.json aside (kept, never deleted) so that a fresh one can start."""
        if not self.state_path.exists():
            return None
        target = self.state_path.with_name(f"state.json.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.state_path, target)
        self.state = empty_state()
        return target

    # ---- audit log ---------------------------------------------------------------------------
    def audit(self, step: str, action: str, result: str, **fields: Any) -> None:
        entry = {
            "time": now_iso(),
            "user": _user(),
            "command": self.command,
            "step": step,
            "action": action,
            "result": result,
            **fields,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(redact(entry), sort_keys=True) + "\n"
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_audit(self) -> list[dict]:
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # ---- lock --------------------------------------------------------------------------------
    def read_lock(self) -> LockInfo | None:
        try:
            data = json.loads(self.lock_path.read_text())
            return LockInfo(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError):
            return LockInfo("unreadable", -1, "?", "?", "?")

    def lock_is_stale(self, info: LockInfo) -> bool:
        return info.host == socket.gethostname() and info.pid > 0 and not _pid_alive(info.pid)

    def acquire_lock(self, command: str) -> LockInfo:
        self.root.mkdir(parents=True, exist_ok=True)
        info = LockInfo(uuid.uuid4().hex[:8], os.getpid(), socket.gethostname(), now_iso(), command)
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = self.read_lock()
                if held is None:
                    continue  # released meanwhile
                if self.lock_is_stale(held):
                    # The holder died (kill -9, power loss): its lock protects nothing any more.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.lock_path)
                    self.audit("-", "stale-lock-removed", "ok", lock=held.__dict__)
                    continue
                raise LockedError(
                    f"project is locked by {held.describe()}",
                    f"wait for it to finish, or if it is gone: graphrag-migrate --force-unlock {held.id}",
                )
            with os.fdopen(fd, "w") as f:
                json.dump(info.__dict__, f)
                f.flush()
                os.fsync(f.fileno())
            self._lock = info
            self.command = command
            return info
        raise LockedError(f"could not take {self.lock_path}", "retry")

    def release_lock(self) -> None:
        if self._lock is None:
            return
        held = self.read_lock()
        if held is not None and held.id == self._lock.id:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        self._lock = None

    def force_unlock(self, lock_id: str) -> LockInfo:
        held = self.read_lock()
        if held is None:
            raise LockedError(f"{self.project} is not locked", "nothing to unlock")
        if held.id != lock_id:
            raise LockedError(f"the lock is {held.id}, not {lock_id}", f"pass --force-unlock {held.id}")
        os.unlink(self.lock_path)
        self.audit("-", "force-unlock", "ok", lock=held.__dict__)
        return held

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator["Ledger"]:
        self.acquire_lock(command)
        try:
            yield self
        finally:
            self.release_lock()

    # ---- phases and steps --------------------------------------------------------------------
    def phase(self, name: str) -> dict:
        return self.state["phases"].setdefault(name, {"status": "pending", "steps": {}})

    def record_step(self, phase: str, step: str, status: str, message: str = "", **extra: Any) -> None:
        entry = self.phase(phase)["steps"].setdefault(step, {})
        entry.update({"status": status, "at": now_iso(), "message": message})
        for key, value in extra.items():
            if value is not None:
                entry[key] = value
        self.save()
        self.audit(step, "step", status, message=message, **{k: v for k, v in extra.items() if v is not None})

    def step(self, phase: str, step: str) -> dict:
        return self.state["phases"].get(phase, {}).get("steps", {}).get(step, {})

    # ---- files -------------------------------------------------------------------------------
    def relpath(self, path: Path) -> str:
        """The key a file has in the ledger: its path as the user names it (links not followed)."""
        absolute = Path(os.path.abspath(path))
        try:
            return str(absolute.relative_to(os.path.abspath(self.project)))
        except ValueError:
            return str(absolute)

    def backup_path(self, rel: str) -> Path:
        return self.backups / rel.lstrip("/")

    def files_from_audit(self) -> tuple[dict[str, dict], list[str]]:
        """The `files` records rebuilt from the audit log, for a rollback whose state.json was lost: a
        file's first logged write says whether it existed, its last what the tool wrote, and which keys
        it set. A file a rollback released is forgotten (it is the operator's again) until the tool
        writes it anew. A backup is used only if its checksum is one the log recorded as a file's
        content before a write. Returns (records, files left out because their backup is missing or
        does not match)."""
        files: dict[str, dict] = {}
        befores: dict[str, set] = {}
        for entry in self.read_audit():
            rel = entry.get("file")
            if entry.get("action") == "release" and rel:
                files.pop(rel, None)
                befores.pop(rel, None)
                continue
            if entry.get("action") != "write" or not rel:
                continue
            record = files.setdefault(rel, {"existed": entry.get("before_sha256") is not None,
                                            "step": entry.get("step"), "recovered_from": "audit log"})
            befores.setdefault(rel, set()).add(entry.get("before_sha256"))
            record["written_sha256"] = entry.get("after_sha256")
            if entry.get("keys_set"):
                record["keys_set"] = sorted(set(record.get("keys_set", [])) | set(entry["keys_set"]))
            if entry.get("created_dir"):
                record.setdefault("created_dir", entry["created_dir"])
        left_out = []
        for rel, record in list(files.items()):
            if not record["existed"]:
                continue
            backup = self.backup_path(rel)
            digest = sha256_bytes(backup.read_bytes()) if backup.is_file() else None
            if digest is None or digest not in befores[rel]:
                left_out.append(rel)
                del files[rel]
                continue
            record.update(backup=str(backup.relative_to(self.root)), original_sha256=digest)
        return files, left_out


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return str(os.getuid())
