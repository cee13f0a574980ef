"""The one place that writes user files.

Every write: (1) in dry-run, only records a unified diff; (2) otherwise backs the file up the first
time the tool changes it, records the intended checksum in the ledger, writes atomically (temp file,
fsync, rename) keeping the file's mode, and writes through a symlink to its target; (3) logs the
before/after checksums to the audit log. Rollback restores from the same records, then *releases*
each file it put back (`released_at` in its record, a `release` line in the audit log): from then on
the file is the operator's again — not drift, not restored twice, and backed up afresh should a new
migration change it. An OS failure (permissions, an immutable file, a full disk, a directory in the
file's place) is an EnvironmentMissing naming the file, raised before the file is touched or after it
is whole again.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from migrator.core.errors import BackupMismatch, EnvironmentMissing, from_os_error
from migrator.core.ledger import Ledger, atomic_write_bytes, now_iso, sha256_bytes
from migrator.core.secrets import MASK, is_secret_name, redact

_ENV_ASSIGN_RE = re.compile(r"^(?P<head>\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)\s*=)(?P<value>.*)$",
                            re.S)
_EMPTY_VALUE_RE = re.compile(r"""\s*(""|''|)\s*(\s#.*)?""", re.S)


@dataclass
class FileChange:
    path: Path
    rel: str
    before: bytes | None
    after: bytes | None  # None = removed

    def diff(self) -> str:
        return unified_diff(self.rel, self.before, self.after)


def _closes(text: str, quote: str) -> bool:
    return bool(re.search(r'(?<!\\)"', text)) if quote == '"' else quote in text


def _secret_lines(lines: list[str]) -> dict[int, str]:
    """Which lines of a file hold a secret's value: {index: "head"} for `NAME=value` with a secret NAME
    (an empty value excepted: shown as it is) and {index: "more"} for the further lines of a quoted value
    that spans several (a PEM key), so that no diff shows them, even as context without their first line."""
    found: dict[int, str] = {}
    i = 0
    while i < len(lines):
        m = _ENV_ASSIGN_RE.match(lines[i].rstrip("\r\n"))
        if m is None:
            i += 1
            continue
        value = m["value"].lstrip()
        end = i
        if value[:1] in ('"', "'") and not _closes(value[1:], value[0]):
            end = i + 1
            while end < len(lines) - 1 and not _closes(lines[end], value[0]):
                end += 1
            end = min(end, len(lines) - 1)
        if is_secret_name(m["key"]) and not (end == i and _EMPTY_VALUE_RE.fullmatch(value)):
            found[i] = "head"
            found.update({k: "more" for k in range(i + 1, end + 1)})
        i = end + 1
    return found


def _diff_line(sign: str, line: str, secret: str | None) -> str:
    body = line[:-1] if line.endswith("\n") else line
    if secret == "head":
        body = _ENV_ASSIGN_RE.match(body.rstrip("\r"))["head"] + MASK
    elif secret == "more":
        body = MASK
    else:
        body = redact(body)
    return f"{sign}{body}\n" + ("" if line.endswith("\n") else "\\ No newline at end of file\n")


def _range(start: int, stop: int) -> str:
    """A hunk's range as `diff -u` writes it."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def unified_diff(rel: str, before: bytes | None, after: bytes | None) -> str:
    """`diff -u` of the two versions, secrets masked: values of secret names (the whole of a multi-line
    one), known secret values and token shapes."""
    old = (before or b"").decode("utf-8", errors="replace").splitlines(keepends=True)
    new = (after or b"").decode("utf-8", errors="replace").splitlines(keepends=True)
    groups = list(difflib.SequenceMatcher(None, old, new).get_grouped_opcodes(3))
    if not groups or old == new:
        return ""
    old_secret, new_secret = _secret_lines(old), _secret_lines(new)
    out = [f"--- {f'a/{rel}' if before is not None else '/dev/null'}\n",
           f"+++ {f'b/{rel}' if after is not None else '/dev/null'}\n"]
    for group in groups:
        out.append(f"@@ -{_range(group[0][1], group[-1][2])} +{_range(group[0][3], group[-1][4])} @@\n")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [_diff_line(" ", old[i], old_secret.get(i)) for i in range(a1, a2)]
                continue
            out += [_diff_line("-", old[i], old_secret.get(i)) for i in range(a1, a2)]
            out += [_diff_line("+", new[j], new_secret.get(j)) for j in range(b1, b2)]
    return "".join(out)


def _first_missing_dir(directory: Path, project: Path) -> Path | None:
    """The outermost directory that a write into `directory` will create (inside the project), if any."""
    missing = None
    d = Path(os.path.abspath(directory))
    root = Path(os.path.abspath(project))
    while not d.exists() and d != d.parent and root in d.parents:
        missing, d = d, d.parent
    return missing


def _keep_older_backup(backup: Path, before: bytes) -> None:
    """A second migration backs the file up again; an older backup holding other bytes (the
    pre-migration copy a rollback that kept the operator's edits pointed to) is set aside, not lost."""
    try:
        older = backup.read_bytes()
    except FileNotFoundError:
        return
    if older != before:
        os.replace(backup, backup.with_name(f"{backup.name}.{time.strftime('%Y%m%dT%H%M%S')}"))


def _target(path: Path) -> Path:
    """The file a write really lands in: a symlinked .env is written through, the link kept."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _mode_and_owner(target: Path) -> tuple[int, tuple[int, int]]:
    """The permission bits and (uid, gid) a rewrite of `target` keeps."""
    st = target.stat()
    return stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)


@contextlib.contextmanager
def _os_faults(doing: str, path: Path):
    """An OSError inside becomes the environment error naming `path` (see errors.from_os_error)."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(exc, doing, path) from None


@dataclass
class FileWriter:
    ledger: Ledger
    dry_run: bool = False
    planned: list[FileChange] = field(default_factory=list)

    def read(self, path: Path) -> bytes | None:
        """The file's bytes — in dry-run, as earlier planned writes left them, so steps chain."""
        if self.dry_run:
            for change in self.planned:
                if change.path == path:
                    return change.after
        try:
            return _target(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise from_os_error(exc, "reading", path) from None

    def write(self, path: Path, data: bytes, step: str, keys: Iterable[str] = ()) -> FileChange | None:
        """Write `data` to `path` (see module doc). Returns the change, or None when nothing changes.

        `keys`: the settings this write sets (env keys), recorded so that a rollback that cannot restore
        the file verbatim knows what the tool changed and what was the operator's."""
        with _os_faults("writing", path):
            target = _target(path)
        before = self.read(path)
        rel = self.ledger.relpath(path)
        if before == data:
            return None
        change = FileChange(path, rel, before, data)
        if self.dry_run:
            for planned in self.planned:
                if planned.path == path:  # one diff per file: from what is on disk to the last plan
                    planned.after = data
                    return planned
            self.planned.append(change)
            return change
        files = self.ledger.state["files"]
        record = files.get(rel)
        if record is None or record.get("released_at"):  # a released file is the operator's: back it up anew
            record = {"existed": before is not None, "first_changed_at": now_iso(), "step": step}
            created = _first_missing_dir(target.parent, self.ledger.project)
            if created is not None:  # remembered so that rollback removes only what the tool created
                record["created_dir"] = self.ledger.relpath(created)
            if before is not None:
                backup = self.ledger.backup_path(rel)
                with _os_faults(f"backing up {rel} to", backup):
                    _keep_older_backup(backup, before)
                    atomic_write_bytes(backup, before, mode=0o600)
                    original = target.stat()
                record["backup"] = str(backup.relative_to(self.ledger.root))
                record["original_sha256"] = sha256_bytes(before)
                record["original_mode"] = stat.S_IMODE(original.st_mode)  # restored with the bytes
                record["original_owner"] = [original.st_uid, original.st_gid]
            files[rel] = record
        # Record the intent before the write: after a crash the file is either as before or as intended.
        record["written_sha256"] = sha256_bytes(data)
        record["written_at"] = now_iso()
        if keys:
            record["keys_set"] = sorted(set(record.get("keys_set") or ()) | set(keys))
        self.ledger.save()
        with _os_faults("writing", path):
            mode, owner = _mode_and_owner(target) if before is not None else (None, None)
            atomic_write_bytes(target, data, mode=mode, owner=owner)
            written = target.read_bytes()
        if written != data:  # verify every write by reading it back
            raise EnvironmentMissing(f"{path} does not read back what was written",
                                     f"check the disk; the original is in {self.ledger.root.name}/backups")
        self.ledger.audit(
            step, "write", "ok", file=rel,
            before_sha256=sha256_bytes(before) if before is not None else None,
            after_sha256=sha256_bytes(data), created_dir=record.get("created_dir"),
            **({"keys_set": sorted(set(keys))} if keys else {}),
        )
        return change

    def restore(self, rel: str, step: str = "rollback") -> str:
        """Put a file back as it was before the tool first changed it. Returns what was done."""
        record = self.ledger.state["files"].get(rel)
        path = self.ledger.project / rel
        if record is None:
            return "not changed by graphrag-migrate"
        if record.get("released_at"):
            return f"already rolled back ({record.get('released', 'released')}); the file is yours since"
        current = self.read(path)
        if record.get("existed"):
            backup = self.ledger.root / record["backup"]
            try:
                original = backup.read_bytes()
            except FileNotFoundError:
                return f"backup {backup} is missing: left as it is"
            except OSError as exc:
                raise from_os_error(exc, "reading the backup", backup) from None
            recorded = record.get("original_sha256")
            if recorded and sha256_bytes(original) != recorded:  # changed since it was taken: never put back
                raise BackupMismatch(
                    f"{rel} not restored: its backup {self.ledger.root.name}/{record['backup']} does not match the "
                    f"sha256 recorded when it was taken (sha256 {sha256_bytes(original)[:12]}…, recorded "
                    f"{recorded[:12]}…)",
                    f"put your own pre-migration copy of {rel} in place by hand (the backup was changed since)")
            if current == original:
                self.release(rel, "already as before", step)
                return "already as before"
            if self.dry_run:
                self.planned.append(FileChange(path, rel, current, original))
                return "would restore"
            with _os_faults("restoring", path):
                target = _target(path)
                mode, owner = _mode_and_owner(target) if current is not None else (None, None)
                if record.get("original_mode") is not None:  # as it was before the tool first changed it
                    mode = int(record["original_mode"])
                if isinstance(record.get("original_owner"), list) and len(record["original_owner"]) == 2:
                    owner = (int(record["original_owner"][0]), int(record["original_owner"][1]))
                atomic_write_bytes(target, original, mode=mode, owner=owner)
            self.ledger.audit(step, "restore", "ok", file=rel,
                              before_sha256=sha256_bytes(current) if current is not None else None,
                              after_sha256=sha256_bytes(original))
            self.release(rel, "restored from backup", step)
            return "restored from backup"
        # The tool created it: remove it, but only if it is still what the tool wrote.
        if current is None:
            self.release(rel, "already removed", step)
            return "already removed"
        if sha256_bytes(current) != record.get("written_sha256"):
            return "created by graphrag-migrate but edited since: kept"
        if self.dry_run:
            self.planned.append(FileChange(path, rel, current, None))
            return "would remove"
        with _os_faults("removing", path):
            os.unlink(path)
        self.ledger.audit(step, "remove", "ok", file=rel, before_sha256=sha256_bytes(current))
        self.release(rel, "removed", step)
        return "removed (graphrag-migrate created it)"

    def release(self, rel: str, how: str, step: str = "rollback") -> None:
        """The file is back as the operator had it (or, kept edits, theirs to own): the tool no longer
        owns it. Kept in the ledger (created_dir, the backup's name) and logged, so that a rollback
        rebuilding its records from the audit log drops it too."""
        record = self.ledger.state["files"].get(rel)
        if record is None or record.get("released_at") or self.dry_run:
            return
        record.update(released_at=now_iso(), released=how)
        self.ledger.save()
        self.ledger.audit(step, "release", "ok", file=rel, how=how)

    def remove_created_dirs(self) -> list[str]:
        """After restores: remove the directories the tool created, if nothing else lives in them now."""
        removed = []
        for record in self.ledger.state["files"].values():
            created = record.get("created_dir")
            top = self.ledger.project / created if created else None
            if top is not None and top.is_dir() and not any(p.is_file() for p in top.rglob("*")):
                try:
                    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True):
                        d.rmdir()
                    top.rmdir()
                except OSError:  # busy or read-only: an empty directory left is harmless, the rollback goes on
                    continue
                removed.append(created)
        return removed

    def drift(self) -> dict[str, str]:
        """Files whose content changed since the tool last wrote them: rel -> what is seen. Files a
        rollback released are the operator's again: whatever they hold is not drift."""
        out = {}
        for rel, record in self.ledger.state["files"].items():
            if record.get("released_at"):
                continue
            current = self.read(self.ledger.project / rel)
            cur_sha = sha256_bytes(current) if current is not None else None
            if cur_sha == record.get("written_sha256"):
                continue
            if record.get("existed") and cur_sha == record.get("original_sha256"):
                out[rel] = "back to its pre-migration content"
            elif cur_sha is None:
                out[rel] = "deleted"
            else:
                out[rel] = "edited since graphrag-migrate wrote it"
        return out
