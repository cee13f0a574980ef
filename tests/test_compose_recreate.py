"""The compose backend's recreate when compose fails: the error shown is compose's error, not its warnings,
and a replacement container half-made by an interrupted recreate is removed so the next one succeeds.
Every service that calls the LLM is recreated (root-multi-service's worker too), each attempted."""

import subprocess
from types import SimpleNamespace

from migrator.adapters.runtime.compose import ComposeBackend, compose_error

CONFLICT = ('time="2026-12-01T23:48:15Z" level=warning msg="Found orphan containers ([x-vllm]) for this project."\n'
            ' Container x-backend-1  Recreate\n'
            'Error response from daemon: Conflict. The container name "/x-backend-1" is already in use by container '
            '"7ccb". You have to remove (or rename) that container to be able to reuse that name.\n')


class FakeCompose:
    """What ComposeBackend calls, answering as compose does; `conflicts` recreates fail with a name conflict."""

    def __init__(self, conflicts: int, rm_ok: bool = True, deployed=None, broken=()):
        self.conflicts, self.rm_ok, self.calls = conflicts, rm_ok, []
        self.deployed, self.broken = deployed, set(broken)  # deployed None: every service is

    def run(self, *args, **_):
        self.calls.append(args)
        if args[0] == "ps":
            up = self.deployed is None or args[-1] in self.deployed
            return subprocess.CompletedProcess(args, 0, "abc123\n" if up else "", "")
        return subprocess.CompletedProcess(args, 0 if self.rm_ok else 1, "", "" if self.rm_ok else "rm failed")

    def recreate(self, service, grace_s=None):
        self.calls.append(("recreate", service))
        if service in self.broken:
            return subprocess.CompletedProcess([], 1, "", f"Error response from daemon: {service} will not start\n")
        if self.conflicts:
            self.conflicts -= 1
            return subprocess.CompletedProcess([], 1, "", CONFLICT)
        return subprocess.CompletedProcess([], 0, "", "")


def ctx(tmp_path, llm_services=()):
    from migrator.core.config import ProjectSettings

    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text("services: {}\n")
    settings = SimpleNamespace(project=ProjectSettings(backend_service="backend", llm_services=list(llm_services)),
                               deploy=SimpleNamespace(stop_grace_s=30.0))
    return SimpleNamespace(settings=settings, compose_path=compose_file, docker=SimpleNamespace(ping=lambda: None))


def test_the_error_shown_is_composes_error_not_its_warnings():
    shown = compose_error(CONFLICT)
    assert "level=warning" not in shown and "is already in use by container" in shown
    assert "\n" not in shown and "Recreate" not in shown  # one line: compose's last, not its progress


def test_a_long_error_is_cut_to_the_limit_and_only_warnings_fall_back_to_the_last_warning():
    assert compose_error("x" * 500, limit=40) == "x" * 39 + "…"
    only_warnings = 'level=warning msg="a"\nlevel=warning msg="b"\n'
    assert compose_error(only_warnings) == 'level=warning msg="b"'
    assert compose_error("") == "no error output"


def test_a_half_made_replacement_is_removed_and_the_recreate_done_once_more(tmp_path):
    fake = FakeCompose(conflicts=1)
    ok, message = ComposeBackend().recreate(ctx(tmp_path), fake)
    assert ok and "after removing a half-made container" in message, message
    assert ("rm", "-f", "backend") in fake.calls and fake.calls.count(("recreate", "backend")) == 2


def test_a_conflict_that_stays_is_reported_with_composes_error(tmp_path):
    fake = FakeCompose(conflicts=5)
    ok, message = ComposeBackend().recreate(ctx(tmp_path), fake)
    assert not ok and "is already in use by container" in message and "level=warning" not in message
    assert fake.calls.count(("recreate", "backend")) == 2  # retried once, not in a loop


def test_every_service_that_calls_the_llm_is_recreated_backend_first(tmp_path):
    """A worker beside the API reads the env file too: left running, it would stay on the LLM it started with."""
    fake = FakeCompose(conflicts=0)
    ok, message = ComposeBackend().recreate(ctx(tmp_path, ["backend", "worker"]), fake)
    assert ok and [c[1] for c in fake.calls if c[0] == "recreate"] == ["backend", "worker"]
    assert message == "service 'backend' recreated; service 'worker' recreated"
    plan = ComposeBackend().recreate_plan(ctx(tmp_path, ["worker"]))
    assert [line.split()[-1] for line in plan] == ["backend", "worker"]


def test_a_service_not_deployed_is_said_and_the_others_recreated(tmp_path):
    fake = FakeCompose(conflicts=0, deployed={"backend"})
    ok, message = ComposeBackend().recreate(ctx(tmp_path, ["worker"]), fake)
    assert ok and message.endswith("service 'backend' recreated"), message  # the caller waits for it
    assert "'worker' is not deployed" in message and ("recreate", "worker") not in fake.calls


def test_one_failed_recreate_fails_the_step_after_the_others_are_attempted(tmp_path):
    fake = FakeCompose(conflicts=0, broken={"backend"})
    ok, message = ComposeBackend().recreate(ctx(tmp_path, ["worker"]), fake)
    assert not ok and "up -d --no-deps backend failed" in message and "service 'worker' recreated" in message
    assert ("recreate", "worker") in fake.calls
