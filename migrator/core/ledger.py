"""The migration ledger: what was done, to which files, and how to undo it.

`<project>/.graphrag-migrate/` holds
  state.json   current state (phases, steps, files, resources), replaced atomically on every save;
  audit.jsonl  append-only history: one JSON line per action, with file checksums before and after;
  backups/     a copy of each user file taken before the tool first changed it;
  lock         the id of the run that holds the project;
  .gitignore   `*`: the directory holds backups of files with secrets, never to be committed.
Its directories are 0700 and its files 0600: backups and staging's env file carry the user's secrets.

Nothing here is written by `--check`, `--dry-run` or `status`: they open the ledger read-only.
An OS failure while writing here (full disk, read-only file system, permissions) is an environment
error naming the file (`errors.from_os_error`), never a crash.
"""

from __future__ import annotations

import contextlib
import errno
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

from migrator.core.errors import LockedError, StateCorrupt, from_os_error
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


def make_dirs(directory: Path) -> None:
    """`mkdir -p`, except that the tool's own directories (the state directory and what is under it) are
    made private (0700) and the state directory gets its `.gitignore` of `*` when it is created: backups
    hold the user's secrets, and `git add -A` in the project must never take them."""
    directory = Path(directory)
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    private = STATE_DIRNAME in directory.parts
    try:
        os.mkdir(directory, 0o700 if private else 0o777)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    if private:
        os.chmod(directory, 0o700)  # whatever the umask
    if directory.name == STATE_DIRNAME:
        ignore = directory / ".gitignore"
        fd = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("*\n")


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None,
                       owner: tuple[int, int] | None = None) -> None:
    """Write via a temp file in the same directory, fsync, rename, fsync the directory. The file is 0600
    unless `mode` says otherwise (the temp file's mode: nobody else ever sees a half-written secret), and
    owned by `owner` (uid, gid) when given — the file it replaces keeps its owner and group, a deploy user's
    `.env` written by root included (as another user, only a group of one's own can be given)."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if owner is not None and (os.fstat(f.fileno()).st_uid, os.fstat(f.fileno()).st_gid) != tuple(owner):
                try:
                    os.fchown(f.fileno(), *owner)  # before the mode: chown clears setuid/setgid bits
                except PermissionError:
                    if os.geteuid() == 0:
                        raise
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


def _check_shape(state: Any) -> None:
    """The inner shape every reader relies on (ValueError naming the first part that is wrong): a state
    whose top level looks right but holds a string where a step should be is as corrupt as a cut one."""
    if not isinstance(state, dict) or state.get("schema") != SCHEMA_VERSION:
        raise ValueError("not a graphrag-migrate state of schema 1")
    for key in ("phases", "files", "resources"):
        if not isinstance(state.get(key), dict):
            raise ValueError(f"'{key}' is missing or not a mapping")
    for name, phase in state["phases"].items():
        if not isinstance(phase, dict) or not isinstance(phase.get("steps", {}), dict):
            raise ValueError(f"phase '{str(name)[:40]}' is not a mapping with 'steps'")
        if not isinstance(phase.get("status", ""), str):
            raise ValueError(f"phase '{str(name)[:40]}' has a status that is not a string")
        for step, entry in phase.get("steps", {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("status", ""), str):
                raise ValueError(f"step '{str(step)[:60]}' is not a mapping with a status")
    for rel, record in state["files"].items():
        if not isinstance(record, dict):
            raise ValueError(f"file record '{str(rel)[:60]}' is not a mapping")


@dataclass
class LockInfo:
    id: str
    pid: int
    host: str
    started_at: str
    command: str
    problem: str = ""  # why the lock file could not be read ("" when it could)

    def describe(self) -> str:
        if self.problem:
            return f"an {self.problem} lock file"
        return f"lock {self.id} (pid {self.pid} on {self.host}, '{self.command}', since {self.started_at})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_time() -> float | None:
    try:
        return next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _process_start(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where that cannot be read."""
    boot = _boot_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _holder_running(info: LockInfo) -> bool:
    """The lock's holder still runs on this host: its pid is alive and that process is not a newer one
    that reuses the pid (after a reboot, or a long time later), i.e. it started before the lock was taken."""
    if info.pid <= 0 or not _pid_alive(info.pid):
        return False
    started = _process_start(info.pid)
    try:
        from datetime import datetime

        taken = datetime.strptime(info.started_at, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return True
    boot = _boot_time()
    if boot is not None and taken < boot - 60:
        return False  # taken before this boot: whatever has the pid now is not the holder
    # A minute's slack: /proc's boot time and the lock's stamp are whole seconds, and NTP may step the clock.
    return started is None or started <= taken + 60


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
        self.notices: list[str] = []  # what the operator should hear (a stale lock taken over)
        self.audit_skipped = 0  # lines the last read_audit could not use (cut short, not UTF-8, not an object)

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
            _check_shape(state)
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
        try:
            atomic_write_bytes(self.state_path, data)
        except OSError as exc:
            raise from_os_error(exc, "saving the migration state", self.state_path) from None

    def quarantine_state(self) -> Path | None:
        """Move an unreadable state.json aside (kept, never deleted) so that a fresh one can start."""
        if not self.state_path.exists():
            return None
        target = self.state_path.with_name(f"state.json.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.state_path, target)
        except OSError as exc:
            raise from_os_error(exc, "setting the corrupt state aside", self.state_path) from None
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
        line = (json.dumps(redact(entry), sort_keys=True) + "\n").encode()
        try:
            make_dirs(self.root)
            fd = os.open(self.audit_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise from_os_error(exc, "writing the audit log", self.audit_path) from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a line cut short by a crash stays alone: this one is whole
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.audit_path))
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no half line: the log stays one JSON object a line
                raise
        except OSError as exc:
            raise from_os_error(exc, "writing the audit log", self.audit_path) from None
        finally:
            os.close(fd)

    def read_audit(self) -> list[dict]:
        """Every entry of the audit log that can be read. A line that cannot — cut short by a crash or a
        full disk, not UTF-8, JSON but not an object — is skipped and counted (`audit_skipped`): a rollback
        without state.json must still get what the rest of the log says."""
        self.audit_skipped = 0
        try:
            raw = self.audit_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise from_os_error(exc, "reading the audit log", self.audit_path) from None
        out = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                entry = None
            if isinstance(entry, dict):
                out.append(entry)
            else:
                self.audit_skipped += 1
        return out

    # ---- lock --------------------------------------------------------------------------------
    def read_lock(self) -> LockInfo | None:
        try:
            raw = self.lock_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return LockInfo("unreadable", -1, "?", "?", "?", problem=f"unreadable ({exc.strerror})")
        if not raw.strip():
            return LockInfo("unreadable", -1, "?", "?", "?", problem="empty")
        try:
            return LockInfo(**{k: v for k, v in json.loads(raw).items() if k != "problem"})
        except (ValueError, TypeError, AttributeError):
            return LockInfo("unreadable", -1, "?", "?", "?", problem="unreadable")

    def lock_is_stale(self, info: LockInfo) -> bool:
        """The lock protects nothing: its holder is gone from this host, or the file holds no holder at
        all (empty or garbled: no run writes one so, since locks appear whole — see `_write_lock`)."""
        if info.problem:
            return True
        return info.host == socket.gethostname() and not _holder_running(info)

    def _write_lock(self, info: LockInfo) -> bool:
        """Create the lock whole or not at all: written to a temp file, then hard-linked into place (which
        fails if a lock exists). A full disk leaves no 0-byte lock to block the next run. False if held."""
        make_dirs(self.root)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".lock.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({k: v for k, v in info.__dict__.items() if k != "problem"}, f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.lock_path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                return self._write_lock_without_links(info)  # a file system without hard links
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _write_lock_without_links(self, info: LockInfo) -> bool:
        try:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({k: v for k, v in info.__dict__.items() if k != "problem"}, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(self.lock_path)  # never a half-written lock
            raise
        return True

    def acquire_lock(self, command: str) -> LockInfo:
        info = LockInfo(uuid.uuid4().hex[:8], os.getpid(), socket.gethostname(), now_iso(), command)
        for _ in range(3):
            try:
                taken = self._write_lock(info)
            except OSError as exc:
                raise from_os_error(exc, "taking the project lock", self.lock_path) from None
            if not taken:
                held = self.read_lock()
                if held is None:
                    continue  # released meanwhile
                if self.lock_is_stale(held):
                    # The holder died (kill -9, power loss) or left no name: the lock protects nothing.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.lock_path)
                    self.notices.append(f"took over {held.describe()}: "
                                        + ("no run could have been holding it" if held.problem
                                           else "its process is gone"))
                    self.audit("-", "stale-lock-removed", "ok", lock=held.__dict__)
                    continue
                raise LockedError(
                    f"project is locked by {held.describe()}",
                    f"wait for it to finish, or if it is gone: graphrag-migrate --force-unlock {held.id}",
                )
            self._lock = info
            self.command = command
            return info
        raise LockedError(f"could not take {self.lock_path}", "retry")

    def release_lock(self) -> None:
        if self._lock is None:
            return
        held = self.read_lock()
        if held is not None and held.id == self._lock.id:
            # Left behind (a read-only remount), it is stale once this process ends: never worth a crash.
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
        self._lock = None

    def force_unlock(self, lock_id: str) -> LockInfo:
        held = self.read_lock()
        if held is None:
            raise LockedError(f"{self.project} is not locked", "nothing to unlock")
        if held.id != lock_id:
            raise LockedError(f"the lock is {held.id}, not {lock_id}", f"pass --force-unlock {held.id}")
        if (not held.problem and held.host == socket.gethostname() and held.pid != os.getpid()
                and _holder_running(held)):  # (this process holding it is no other run)
            raise LockedError(
                f"{held.describe()} is held by a live process: pid {held.pid} ('{held.command}') still runs here",
                f"wait for it to finish, or stop it (kill {held.pid}) and run --force-unlock {held.id} again")
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_os_error(exc, "removing the project lock", self.lock_path) from None
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
