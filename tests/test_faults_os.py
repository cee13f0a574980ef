"""Ordinary OS faults where the tool writes — permissions, an immutable file, a directory where a file is
expected, a full disk, a read-only file system, a name too long — are environment errors (exit 3): one line
naming the file, the errno in words and the fix; never "internal error". Also the lock under faults and the
privacy of `.graphrag-migrate/`.

Real faults where root cannot bypass them: `chattr +i`, a directory in a file's place, a small tmpfs filled
up or remounted read-only (each undone in a finally; skipped with the reason where this host cannot).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step, check_phase, run_phase
from migrator.core.errors import EnvironmentMissing, ExitCode, LockedError, from_os_error
from migrator.core.fileops import FileWriter
from migrator.core.ledger import Ledger, now_iso


# ---- real faults -------------------------------------------------------------------------------------
@contextlib.contextmanager
def immutable(path: Path):
    """`chattr +i`: even root can neither write, replace nor remove the file."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: the immutable-file case needs it")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here ({done.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "64k"):
    """A tiny file system of its own, so that a full disk or a read-only one is real (unmounted after)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk case needs one")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write until the file system says ENOSPC; the filler is returned so a test can free the space."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp"))


def assert_one_environment_line(exc: EnvironmentMissing, path_fragment: str, code: int) -> None:
    text = exc.one_line()
    assert exc.exit_code == ExitCode.ENVIRONMENT
    assert path_fragment in text and os.strerror(code) in text and errno.errorcode[code] in text, text
    assert exc.fix and "\n" not in text and "bug" not in text and "internal" not in text


# ---- the one mapping ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code, fix_word", [
    (errno.EPERM, "chattr"), (errno.EACCES, "permissions"), (errno.EISDIR, "directory"),
    (errno.ENOSPC, "free space"), (errno.ENAMETOOLONG, "shorter"), (errno.EROFS, "read-write"),
])
def test_an_os_error_becomes_one_environment_line_with_the_file_and_the_fix(code, fix_word):
    err = from_os_error(OSError(code, os.strerror(code), "/srv/graphrag/docker/.env"), doing="writing the env file")
    assert isinstance(err, EnvironmentMissing)
    assert_one_environment_line(err, "/srv/graphrag/docker/.env", code)
    assert err.message.startswith("writing the env file") and fix_word in err.fix


def test_an_os_error_without_a_file_or_with_a_huge_name_stays_one_short_line():
    bare = from_os_error(OSError(errno.EIO, os.strerror(errno.EIO)), doing="saving the state")
    assert "Input/output error (EIO)" in bare.message and bare.fix
    long_name = "/srv/" + "a" * 5000
    err = from_os_error(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), long_name))
    assert len(err.one_line()) < 400 and "…" in err.message


# ---- the file writer ---------------------------------------------------------------------------------
def test_writing_an_immutable_env_file_is_an_environment_error_and_changes_nothing(tmp_path):
    env = tmp_path / "docker" / ".env"
    env.parent.mkdir()
    env.write_bytes(b"LLM_BACKEND=ollama\n")
    writer = FileWriter(Ledger(tmp_path))
    with immutable(env):
        with pytest.raises(EnvironmentMissing) as err:
            writer.write(env, b"LLM_BACKEND=vllm\n", "phase3.env")
    assert_one_environment_line(err.value, "docker/.env", errno.EPERM)
    assert env.read_bytes() == b"LLM_BACKEND=ollama\n" and leftovers(tmp_path) == []


def test_a_directory_where_the_env_file_should_be_is_an_environment_error(tmp_path):
    env = tmp_path / "docker" / ".env"
    env.mkdir(parents=True)
    writer = FileWriter(Ledger(tmp_path))
    with pytest.raises(EnvironmentMissing) as err:
        writer.write(env, b"LLM_BACKEND=vllm\n", "phase3.env")
    assert_one_environment_line(err.value, "docker/.env", errno.EISDIR)
    assert env.is_dir()


def test_a_name_too_long_for_the_file_system_is_an_environment_error(tmp_path):
    path = tmp_path / ("n" * 300)
    with pytest.raises(EnvironmentMissing) as err:
        FileWriter(Ledger(tmp_path)).write(path, b"x\n", "s")
    assert_one_environment_line(err.value, "nnnn", errno.ENAMETOOLONG)


def test_a_full_disk_leaves_the_file_as_it_was_and_no_temp_file(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        env = disk / ".env"
        env.write_bytes(b"LLM_BACKEND=ollama\n")
        ledger = Ledger(disk)
        ledger.save()
        fill(disk)
        with pytest.raises(EnvironmentMissing) as err:
            FileWriter(ledger).write(env, b"LLM_BACKEND=vllm\n" * 50, "phase3.env")
        assert_one_environment_line(err.value, str(disk), errno.ENOSPC)
        assert env.read_bytes() == b"LLM_BACKEND=ollama\n" and leftovers(disk) == []
        Ledger(disk).read_state()  # the state on disk is still whole


def test_a_read_only_file_system_is_an_environment_error(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        ledger = Ledger(disk)
        ledger.save()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        try:
            with pytest.raises(EnvironmentMissing) as save:
                ledger.save()
            with pytest.raises(EnvironmentMissing) as audit:
                ledger.audit("s", "write", "ok")
            with pytest.raises(EnvironmentMissing) as lock:
                ledger.acquire_lock("phase1")
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        for err in (save, audit, lock):
            assert_one_environment_line(err.value, ".graphrag-migrate", errno.EROFS)


# ---- the ledger and the lock -------------------------------------------------------------------------
def test_a_full_disk_never_leaves_an_empty_lock_behind(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        ledger = Ledger(disk)
        ledger.save()
        filler = fill(disk)
        with pytest.raises(EnvironmentMissing) as err:
            ledger.acquire_lock("graphrag-migrate phase1")
        assert_one_environment_line(err.value, ".graphrag-migrate", errno.ENOSPC)
        assert not ledger.lock_path.exists() and leftovers(disk) == []
        filler.unlink()
        info = Ledger(disk).acquire_lock("graphrag-migrate phase1")  # nothing blocks the next run
        assert Ledger(disk).read_lock().id == info.id


def test_an_audit_line_that_does_not_fit_is_not_left_half_written(tmp_path):
    with small_tmpfs(tmp_path / "disk", size="16k") as disk:
        ledger = Ledger(disk)
        ledger.audit("s", "step", "ok")
        fill(disk)
        with pytest.raises(EnvironmentMissing):
            ledger.audit("s", "step", "ok", message="x" * 20000)
        lines = ledger.audit_path.read_bytes().splitlines()
        assert [json.loads(line)["result"] for line in lines] == ["ok"]


@pytest.mark.parametrize("content", [b"", b"{\"id\": \"trunc", b"\xff\xfe\x00"])
def test_an_empty_or_unreadable_lock_is_stale_and_said_so(tmp_path, content):
    ledger = Ledger(tmp_path)
    ledger.root.mkdir()
    ledger.lock_path.write_bytes(content)
    assert ledger.lock_is_stale(ledger.read_lock())
    info = ledger.acquire_lock("graphrag-migrate phase1")
    assert ledger.read_lock().id == info.id
    assert any("lock" in note and ("empty" in note or "unreadable" in note) for note in ledger.notices), ledger.notices
    assert any(e["action"] == "stale-lock-removed" for e in ledger.read_audit())


@pytest.fixture
def live_holder():
    """A live process on this host that a fabricated lock names as its holder."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.2)
    yield child
    child.kill()
    child.wait()


def fabricate_lock(ledger: Ledger, pid: int, started_at: str | None = None) -> None:
    ledger.root.mkdir(exist_ok=True)
    ledger.lock_path.write_text(json.dumps({"id": "c0ffee00", "pid": pid, "host": socket.gethostname(),
                                            "started_at": started_at or now_iso(),
                                            "command": "graphrag-migrate phase4"}))


def test_force_unlock_refuses_a_lock_whose_holder_is_alive(tmp_path, live_holder):
    ledger = Ledger(tmp_path)
    fabricate_lock(ledger, live_holder.pid)
    with pytest.raises(LockedError) as err:
        ledger.force_unlock("c0ffee00")
    assert err.value.exit_code == ExitCode.LOCKED
    assert str(live_holder.pid) in err.value.one_line() and "graphrag-migrate phase4" in err.value.one_line()
    assert ledger.read_lock().id == "c0ffee00"
    live_holder.kill()
    live_holder.wait()
    assert ledger.force_unlock("c0ffee00").pid == live_holder.pid  # the holder is gone: removed
    assert ledger.read_lock() is None


def test_force_unlock_removes_a_lock_whose_pid_now_belongs_to_another_process(tmp_path, live_holder):
    """After a reboot the pid may be reused: a process started after the lock was taken is not its holder."""
    ledger = Ledger(tmp_path)
    fabricate_lock(ledger, live_holder.pid, started_at="2020-01-01T00:00:00+0000")
    assert ledger.lock_is_stale(ledger.read_lock())
    ledger.force_unlock("c0ffee00")
    assert ledger.read_lock() is None


def test_cli_force_unlock_of_a_live_holder_exits_4_naming_it(tmp_path, live_holder, cli):
    ledger = Ledger(tmp_path)
    fabricate_lock(ledger, live_holder.pid)
    result = cli("--project", str(tmp_path), "--force-unlock", "c0ffee00", "status")
    assert result.exit_code == ExitCode.LOCKED, result.stderr
    assert str(live_holder.pid) in result.stderr and "graphrag-migrate phase4" in result.stderr
    assert ledger.read_lock() is not None


# ---- the engine: a step that hits an OS error --------------------------------------------------------
class _Raising(Step):
    id = "t.raising"
    title = "a step whose apply hits an OS error"

    def __init__(self, exc: OSError):
        self.exc = exc

    def check(self, ctx):
        return Outcome.failed("not done")

    def apply(self, ctx):
        raise self.exc


class _IntoADirectory(Step):
    id = "t.dir"
    title = "a step that writes where a directory stands"

    def check(self, ctx):
        return Outcome.failed("not done")

    def files(self, ctx):
        return {ctx.project / "docker" / ".env": b"LLM_BACKEND=vllm\n"}


class _CheckRaising(Step):
    id = "t.check"
    title = "a check that cannot read its file"
    read_only = True

    def check(self, ctx):
        return Outcome.passed((ctx.project / "docker" / ".env").read_text())


@pytest.mark.parametrize("step", [
    _Raising(PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/p/docker/.env")),
    _Raising(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/p/docker/.env")),
    _IntoADirectory(),
], ids=["EACCES", "ENOSPC", "EISDIR"])
def test_a_step_whose_apply_hits_an_os_error_is_recorded_failed(tmp_path, step):
    (tmp_path / "docker" / ".env").mkdir(parents=True)
    ledger = Ledger(tmp_path)
    ctx = Context(tmp_path, Settings(), ledger)
    with pytest.raises(EnvironmentMissing) as err:
        run_phase(Phase("t", "test", [step]), ctx)
    assert "docker/.env" in err.value.one_line() and err.value.fix
    state = Ledger(tmp_path).read_state()
    assert state["phases"]["t"]["steps"][step.id]["status"] == "failed"  # not left "applying"
    assert state["phases"]["t"]["status"] == "failed"


def test_a_check_that_hits_an_os_error_is_a_failed_check_not_a_crash(tmp_path):
    (tmp_path / "docker" / ".env").mkdir(parents=True)
    report = check_phase(Phase("t", "test", [_CheckRaising()]), Context(tmp_path, Settings(), Ledger(tmp_path)))
    assert report.steps[0].status == "missing" and "Is a directory" in report.steps[0].message


# ---- the CLI edge ------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_an_os_error_at_the_cli_edge_is_exit_3_with_the_path_not_internal(tmp_path, monkeypatch, cli, code):
    import migrator.app.api

    def broken(*args, **kwargs):
        raise OSError(code, os.strerror(code), "/srv/graphrag/.graphrag-migrate/state.json")

    monkeypatch.setattr(migrator.app.api, "status", broken)
    result = cli("--project", str(tmp_path), "status")
    assert result.exit_code == ExitCode.ENVIRONMENT, result.stderr
    assert "/srv/graphrag/.graphrag-migrate/state.json" in result.stderr and os.strerror(code) in result.stderr
    assert "internal error" not in result.stderr and "bug" not in result.stderr
    as_json = cli("--project", str(tmp_path), "--json", "status")
    assert json.loads(as_json.stdout)["exit_code"] == ExitCode.ENVIRONMENT


# ---- .graphrag-migrate/ is private ---------------------------------------------------------------------
def modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]}


def test_the_state_directory_is_private_and_ignored_by_git(tmp_path):
    ledger = Ledger(tmp_path)
    env = tmp_path / "docker" / ".env"
    env.parent.mkdir()
    env.write_bytes(b"HF_TOKEN=x\n")
    FileWriter(ledger).write(env, b"HF_TOKEN=x\nLLM_BACKEND=vllm\n", "s")
    ledger.audit("s", "x", "ok")
    ledger.acquire_lock("phase1")
    assert (ledger.root / ".gitignore").read_text() == "*\n"
    found = modes(ledger.root)
    assert {k: v for k, v in found.items() if (ledger.root / k).is_dir()} == {
        ".": "0o700", "backups": "0o700", "backups/docker": "0o700"}
    assert {k: v for k, v in found.items() if not (ledger.root / k).is_dir()} == {
        ".gitignore": "0o600", "state.json": "0o600", "audit.jsonl": "0o600", "lock": "0o600",
        "backups/docker/.env": "0o600"}


def test_rollback_goes_on_after_an_undo_that_hits_a_raw_os_error(tmp_path):
    """An undo doing its own I/O may raise a bare OSError: that action fails (environment, exit 3), the
    next one still runs."""
    from migrator.core.engine import Undo, UndoStage
    from phases.rollback import RollbackReport, _attempt

    def immutable_env(ctx):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(tmp_path / "docker" / ".env"))

    report = RollbackReport()
    ctx = Context(tmp_path, Settings(), Ledger(tmp_path))
    _attempt(report, Undo(UndoStage.FILES, "env file", immutable_env), ctx)
    _attempt(report, Undo(UndoStage.STOP, "stop vLLM", lambda ctx: (True, "stopped")), ctx)
    env, stop = report.actions
    assert not env.ok and env.environment and "docker/.env" in env.result and "EPERM" in env.result
    assert stop.ok and report.exit_code == ExitCode.ENVIRONMENT


def test_one_file_that_cannot_be_restored_does_not_stop_the_others(tmp_path):
    from migrator.core.engine import restore_files

    ledger = Ledger(tmp_path)
    writer = FileWriter(ledger)
    for name in ("a.yml", "b.yml"):
        (tmp_path / name).write_bytes(b"before\n")
        writer.write(tmp_path / name, b"after\n", "s")
    ctx = Context(tmp_path, Settings(), ledger)
    with immutable(tmp_path / "a.yml"):
        results = restore_files(ctx, ["a.yml", "b.yml"])
    (a_name, a_ok, a_text, *a_env), (b_name, b_ok, b_text, *_b) = results
    assert not a_ok and a_env == [True] and "Operation not permitted" in a_text
    assert b_ok and (tmp_path / "b.yml").read_bytes() == b"before\n"


def test_a_rollback_that_cannot_record_itself_still_reports_what_it_did(tmp_path, monkeypatch):
    from migrator.core.engine import Undo, UndoStage
    from phases.rollback import rollback

    class Stops(Step):
        id = "t.stop"

        def undos(self):
            return [Undo(UndoStage.STOP, "stop vLLM", lambda ctx: (True, "stopped"))]

    ledger = Ledger(tmp_path)
    ledger.save()

    def full_disk():
        raise from_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "saving the migration state",
                            ledger.state_path)

    monkeypatch.setattr(ledger, "save", full_disk)
    report = rollback(Context(tmp_path, Settings(), ledger), [Phase("t", "test", [Stops()])], wait_s=0)
    assert [(a.name, a.ok) for a in report.actions] == [("stop vLLM", True), ("ledger", False)]
    assert "No space left on device" in report.actions[-1].result and report.exit_code == ExitCode.ENVIRONMENT
