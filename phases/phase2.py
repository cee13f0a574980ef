"""phase2 — backend wiring: can the backend switch its LLM by LLM_BACKEND?

Checks of the backend's source, parsed with `ast` (the user's modules are never imported or run to
inspect them): its settings read LLM_BACKEND, VLLM_BASE_URL and VLLM_MODEL, every Ollama model it builds
is chosen by LLM_BACKEND, langchain-openai is a dependency. With --scaffold, all of it is first wired in
the project's own style (`migrator.files.pywire`), planned in full before one byte is written, each file
shown as a diff and backed up. Then the backend's own unit tests, and a streamed answer through the same
client the backend uses.
"""

from __future__ import annotations

import os
from pathlib import Path

from migrator.core.config import Settings
from migrator.core.engine import Context, Outcome, Phase, Step
from migrator.core.errors import CheckFailed
from migrator.files import pysource, pywire, switch_test

DEFAULT_FIELD_NAMES = ["llm_backend", "vllm_base_url", "vllm_model"]


def _defaults(ctx: Context) -> dict[str, str]:
    """What the new settings default to: Ollama (so the backend starts as before), and where vLLM is."""
    from phases.phase3 import backend_base_url

    return {"LLM_BACKEND": "ollama", "VLLM_BASE_URL": backend_base_url(ctx),
            "VLLM_MODEL": ctx.settings.model.served_name}


def read_backend(ctx: Context) -> pywire.Source:
    b = ctx.settings.backend
    backend = ctx.path(b.dir)
    settings_file = backend / b.config_module
    if not backend.is_dir():
        raise CheckFailed(f"backend.dir {backend} is not a directory", "set backend.dir in migrate.yaml "
                          "(graphrag-migrate init finds it)")
    if not settings_file.is_file():
        raise CheckFailed(f"{settings_file} not found", "set backend.config_module (the file holding the Ollama URL "
                          "setting) in migrate.yaml")
    key = _source_key(ctx, backend)
    cached = ctx.memo.get("backend_source")
    if cached is not None and cached[0] == key:
        return cached[1]
    source = pywire.read_source(ctx.project, backend, settings_file,
                                backend / b.import_root if b.import_root else None)
    problems = source.index.judge(grammar(ctx))
    if problems:  # a file that is not the project's Python, or that no Python here can tell
        first, _, fix = problems[0].partition(" — ")
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        raise CheckFailed(first + more, fix or "fix it first; nothing was written")
    rel = ctx.ledger.relpath(settings_file)
    if rel in source.index.unparsed:
        raise CheckFailed(f"{rel} does not parse", "fix it first; nothing was written")
    ctx.memo["backend_source"] = (key, source)
    return source


def _source_key(ctx: Context, backend: Path) -> tuple:
    """What a read of the backend depends on: the settings that steer it and every source file's identity
    (inode, size, mtime). Each of phase2's checks reads the backend, and for a project on a newer Python each
    read also starts backend.python to judge the grammar: read once a run, and again only once a file changed
    (the wiring's writes replace files: a new inode)."""
    b = ctx.settings.backend
    files = []
    for path in pysource.python_files(backend):
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((str(path), st.st_ino, st.st_size, st.st_mtime_ns))
    return (str(backend), b.config_module, b.import_root, b.python, b.python_version, tuple(files))


def grammar(ctx: Context) -> pysource.Grammar:
    """The backend's syntax is the project's Python's: backend.python parses what this one cannot."""
    b = ctx.settings.backend
    return pysource.Grammar(b.python_version, b.python)


def field_names(ctx: Context, source: pywire.Source) -> dict[str, str]:
    """New settings' names: backend.settings_fields when set, else the project's own case convention."""
    names = list(ctx.settings.backend.settings_fields)
    if len(names) != 3:
        raise CheckFailed(f"backend.settings_fields has {len(names)} names", "give three: switch, vLLM URL, vLLM model")
    if names == DEFAULT_FIELD_NAMES and source.settings is not None:
        return pywire.field_names(source.settings)
    return dict(zip(pywire.ENV_NAMES, names))


def dependency_path(ctx: Context) -> Path:
    return ctx.path(ctx.settings.backend.dir) / ctx.settings.backend.requirements


def import_root(ctx: Context) -> Path:
    b = ctx.settings.backend
    backend = ctx.path(b.dir)
    return backend / b.import_root if b.import_root else pywire.guess_import_root(backend)


def wiring_plan(ctx: Context) -> pywire.WiringPlan:
    """The wiring and the backend's own test of it, planned together from the source as it is now."""
    from migrator.files.templates import render

    source = read_backend(ctx)
    plan = pywire.plan_wiring(source, _defaults(ctx), dependency_path(ctx), render("llm_switch.py.j2"),
                              names=field_names(ctx, source) if source.settings else None)
    # an unknown LLM_BACKEND is refused by select_llm; a hand-written switch may do anything with it
    test = switch_test.render_switch_test(source, import_root(ctx), raises=plan.routed > 0)
    if test is not None and not test.path.exists():
        plan.files[test.path] = test.text
    return plan


def switch_test_missing(ctx: Context, source: pywire.Source) -> str | None:
    """Why the backend's own test of the switch is not there (None when it is, or none can be built)."""
    path = switch_test.switch_test_layout(source.backend).path
    if path.exists():
        return None
    if source.sites and switch_test.render_switch_test(source, import_root(ctx), raises=True) is None:
        return None
    if not source.sites and not switch_test.uses_switch_function(source):
        return None  # wired by hand, by the project: its own tests are its own
    return f"no test of the switch at {ctx.ledger.relpath(path)}"


class SwitchWiring(Step):
    """--scaffold: the switch wired in the project's own style — settings, call sites, dependency — in one
    step, planned in full first: the project is left fully wired or untouched (any refusal writes nothing)."""

    id = "phase2.wiring"
    title = "the backend wired to choose its LLM by LLM_BACKEND"

    def check(self, ctx: Context) -> Outcome:
        source = read_backend(ctx)
        status = pywire.switch_status(source)
        path = dependency_path(ctx)
        text = _read_text(path)
        problems = status.problems + ([] if text is not None and pywire.listed(path, text) else
                                      [f"{pywire.DEPENDENCY} is not in {ctx.ledger.relpath(path)}"])
        no_test = switch_test_missing(ctx, source)
        problems += [no_test] if no_test else []
        if problems:
            return Outcome.failed("; ".join(problems))
        return Outcome.passed("settings, call sites and dependency in place")

    def plan(self, ctx: Context) -> list[str]:
        return [f"write {ctx.ledger.relpath(path)}" for path in wiring_plan(ctx).files]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        plan = wiring_plan(ctx)
        if plan.problems:
            first, *rest = plan.problems
            raise CheckFailed(f"cannot wire the switch ({len(plan.problems)} problem"
                              f"{'s' if rest else ''}; nothing was written): {first}",
                              "; ".join(rest) or "fix it by hand, then re-run phase2 --scaffold")
        return {path: text.encode("utf-8") for path, text in plan.files.items()}

    def apply(self, ctx: Context) -> Outcome | None:
        try:
            return super().apply(ctx)
        finally:  # the backend as read before the wiring is not the backend now
            ctx.memo.pop("backend_source", None)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None


class SettingsFields(Step):
    id = "phase2.settings"
    title = "settings read LLM_BACKEND, VLLM_BASE_URL, VLLM_MODEL"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        source = read_backend(ctx)
        status = pywire.switch_status(source)
        if not status.settings_ok:
            return Outcome.failed(status.problems[0], "phase2 --scaffold adds them in the file's own style")
        where = source.settings.file
        return Outcome.passed(f"{where}: " + ", ".join(f"{env} → {name}" for env, name in status.fields.items()))


class OpenAIClient(Step):
    id = "phase2.llm"
    title = "every Ollama model the backend builds is chosen by LLM_BACKEND"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        source = read_backend(ctx)
        status = pywire.switch_status(source)
        if not status.sites_ok:
            return Outcome.failed(next((p for p in status.problems if "chosen by" in p), status.problems[-1]),
                                  "phase2 --scaffold routes each call site through select_llm")
        return Outcome.passed("each LLM call site switches to the OpenAI-compatible client on LLM_BACKEND=vllm")


class Requirement(Step):
    id = "phase2.requirements"
    title = "langchain-openai is a dependency"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        path = dependency_path(ctx)
        text = _read_text(path)
        if text is not None and pywire.listed(path, text):
            return Outcome.passed(f"listed in {path.name}")
        return Outcome.failed(f"langchain-openai is not in {ctx.ledger.relpath(path)}",
                              f"add `langchain-openai` to {path}, or phase2 --scaffold")


# The backend's tests run in a throw-away copy of its directory, so that `phase2 --check` (read-only) leaves
# the user's tree byte-identical whatever the tests or their plugins write (__pycache__, .pytest_cache,
# .coverage, .benchmarks, files a test drops in its cwd).
_TESTS_NOT_COPIED = frozenset({".git", ".hg", ".svn", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                               ".graphrag-migrate"})
_TESTS_LINKED = frozenset({".venv", "venv", ".tox", ".nox", "node_modules"})  # big, only read: linked, not copied
_TESTS_COPY_BUDGET = (20_000, 512 * 2**20)  # files, bytes: past that the tests run in place (see below)


class _TooLargeToCopy(Exception):
    pass


def _copy_for_tests(src: Path, dst: Path, budget: list[int]) -> None:
    """`src` copied to `dst`: files (with their modes), symlinks as links, virtualenvs linked; FIFOs,
    sockets and devices left out (never opened: a FIFO would block)."""
    import shutil

    os.mkdir(dst)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.name in _TESTS_NOT_COPIED:
                continue
            target = dst / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                if entry.name in _TESTS_LINKED:
                    os.symlink(entry.path, target)
                else:
                    _copy_for_tests(Path(entry.path), target, budget)
            elif entry.is_file():
                budget[0] -= 1
                budget[1] -= entry.stat().st_size
                if budget[0] < 0 or budget[1] < 0:
                    raise _TooLargeToCopy()
                shutil.copy2(entry.path, target)


def _throwaway_backend(project: Path, backend: Path, into: Path) -> Path:
    """A copy of the backend directory under `into`, where the tests run. It sits where it sits in the
    project: each directory between the project root and it is mirrored with links to its other entries,
    so a root pytest.ini/pyproject.toml or a test reading `../docker/.env` finds them (read through the link)."""
    backend = Path(os.path.abspath(backend))
    try:
        rel = backend.relative_to(os.path.abspath(project))
    except ValueError:
        rel = Path(".")
    if rel == Path("."):
        target = into / (backend.name or "backend")
        _copy_for_tests(backend, target, list(_TESTS_COPY_BUDGET))
        return target
    source, mirror = project, into / (project.name or "project")
    os.mkdir(mirror)
    for part in rel.parts:
        with os.scandir(source) as entries:
            for entry in entries:
                if entry.name != part and entry.name != ".graphrag-migrate":
                    os.symlink(entry.path, mirror / entry.name)
        source, mirror = source / part, mirror / part
        if source == backend:
            _copy_for_tests(source, mirror, list(_TESTS_COPY_BUDGET))
        else:
            os.mkdir(mirror)
    return mirror


# A test command starting with one of these runs with backend.python (the backend's interpreter).
BARE_PYTHONS = ("python3", "python")


def with_backend_python(command: str, python: str) -> str:
    """The command as run: a bare `python3`/`python` (the default, and what init writes) is backend.python —
    the interpreter with the backend's packages, a python3.12 for a 3.12 project — not this PATH's python3."""
    import shlex

    argv = shlex.split(command)
    if argv and argv[0] in BARE_PYTHONS and python and python not in BARE_PYTHONS:
        return shlex.join([python, *argv[1:]])
    return command


def _test_argv(command: str) -> list[str]:
    """The test command's argv; pytest gets `-p no:cacheprovider` (no .pytest_cache) unless it has it."""
    import shlex

    argv = shlex.split(command)
    runs_pytest = any(Path(a).name in ("pytest", "py.test") for a in argv[:1]) or any(
        argv[i] == "-m" and argv[i + 1] == "pytest" for i in range(len(argv) - 1))
    if runs_pytest and "no:cacheprovider" not in argv:
        argv += ["-p", "no:cacheprovider"]
    return argv


class BackendUnitTests(Step):
    """The backend's suite, in a throw-away copy; then the proof that the scaffolded switch test can tell a
    wired backend from an un-wired one: run alone with backend.python (the backend's own interpreter and
    packages), it must pass on the tree as it is and fail on a copy of the tree as it was before the
    scaffold (the scaffold's backups put back, the files it created removed, the test itself kept)."""

    id = "phase2.unit-tests"
    title = "the backend's own unit tests pass"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        import shutil
        import subprocess
        import tempfile

        command = ctx.settings.backend.test_command
        if not command:
            return Outcome.passed("backend.test_command is empty: not run")
        command = with_backend_python(command, ctx.settings.backend.python)
        backend = ctx.path(ctx.settings.backend.dir)
        # No bytecode anywhere (also not through the links into the real tree).
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        scratch = tempfile.mkdtemp(prefix="graphrag-migrate-tests-")
        try:
            try:
                cwd, where = _throwaway_backend(ctx.project, backend, Path(scratch)), "a throw-away copy"
            except (_TooLargeToCopy, OSError) as exc:
                why = "too large to copy" if isinstance(exc, _TooLargeToCopy) else f"not copied ({exc.strerror})"
                cwd, where = backend, f"place ({backend.name} {why}: only bytecode and pytest's cache kept out)"
            try:
                proc = subprocess.run(_test_argv(command), cwd=cwd, capture_output=True, text=True, timeout=900,
                                      stdin=subprocess.DEVNULL, env=env)
            except FileNotFoundError:
                return Outcome.failed(f"cannot run `{command}`", "set backend.test_command")
            except subprocess.TimeoutExpired:
                return Outcome.failed(f"`{command}` did not finish in 15 min", "run it by hand")
            said = (proc.stdout.strip() or proc.stderr.strip()).splitlines() or [""]  # unittest reports on stderr
            tail = said[-1][:200] + f" (run in {where})"
            if "No module named" in proc.stderr and proc.returncode != 0:
                missing = proc.stderr.strip().splitlines()[-1][:120]
                return Outcome.warn(f"`{command}` could not start ({missing}): the backend's tests were not run")
            if proc.returncode == 5:  # pytest: no tests collected
                return Outcome.warn(f"no tests found by `{command}`", tests_exit_code=5)
            if proc.returncode != 0:
                return Outcome.failed(f"`{command}` failed: {tail}", "fix the backend's tests first",
                                      tests_exit_code=proc.returncode)
            proof = _prove_switch_test(ctx, backend, cwd if cwd != backend else None, Path(scratch), env)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # links are removed, never followed
        if proof is None:
            return Outcome.passed(f"`{command}`: {tail}", tests_exit_code=0)
        if not proof.ok:
            return proof
        return Outcome(True, f"`{command}`: {tail}; {proof.message}", warning=proof.warning,
                       measurements={"tests_exit_code": 0, **proof.measurements})


def _unwired_copy(ctx: Context, backend: Path, test: Path, into: Path) -> tuple[Path | None, str]:
    """A throw-away copy of the backend as it was before phase2 --scaffold (the scaffold's backups put
    back, the files it created removed, the switch test kept), or None and why there is none."""
    import shutil

    records = {rel: r for rel, r in ctx.ledger.state.get("files", {}).items()
               if r.get("step") == SwitchWiring.id and not r.get("released_at")}
    if not records:
        return None, "phase2 --scaffold wrote nothing here, so there is no un-wired tree to run it on"
    os.mkdir(into)
    copy = _throwaway_backend(ctx.project, backend, into)
    backend_rel = Path(ctx.ledger.relpath(backend))
    for rel, record in records.items():
        try:
            inside = Path(rel).relative_to(backend_rel)
        except ValueError:
            continue  # outside the backend (a root dependency file): the test does not read it
        target = copy / inside
        if Path(os.path.abspath(ctx.project / rel)) == Path(os.path.abspath(test)):
            continue
        if any(parent.is_symlink() for parent in target.parents if copy in parent.parents):
            continue  # under a linked directory (a venv): the real tree, never written
        if target.is_symlink() or target.exists():
            target.unlink()  # a link in the copy points into the real tree: replaced, never written through
        if record.get("existed"):
            backup = ctx.ledger.root / record.get("backup", "")
            if not backup.is_file():
                return None, f"the backup of {rel} is missing"
            shutil.copyfile(backup, target)
    return copy, ""


def _run_switch_test(python: str, layout: "switch_test.SwitchTestLayout", backend: Path, cwd: Path,
                     env: dict) -> tuple["switch_test.RunResult | None", str]:
    """One run of the switch test alone; (None, why) when it could not run, and the module it lacked."""
    import re
    import subprocess

    argv = switch_test.run_argv(python, layout, backend)
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError:
        return None, f"{python} not found (backend.python)"
    except subprocess.TimeoutExpired:
        return None, f"`{' '.join(argv[1:])}` did not finish in 300 s"
    result = switch_test.parse_run(layout.runner, proc.returncode, proc.stdout, proc.stderr)
    missing = re.search(r"No module named '?([\w.]+)", proc.stdout + proc.stderr)
    return result, (f"{python} has no `{missing.group(1)}` (backend.python)" if missing else "")


def _prove_switch_test(ctx: Context, backend: Path, wired: Path | None, scratch: Path, env: dict) -> Outcome | None:
    """The switch test run alone on the wired copy and on the un-wired one (None: there is no switch test)."""
    layout = switch_test.switch_test_layout(backend)
    if not layout.path.is_file():
        return None
    python = ctx.settings.backend.python
    rel = ctx.ledger.relpath(layout.path)
    if wired is None:
        return Outcome.warn(f"switch test {rel}: not proven (the backend could not be copied, and the un-wired "
                            "tree is never made in place)")
    after, lacking = _run_switch_test(python, layout, backend, wired, env)
    if after is None or (after.exit_code != 0 and lacking):
        return Outcome.warn(f"switch test {rel} not proven: {lacking}", switch_test="not run")
    if after.exit_code != 0:
        return Outcome.failed(f"switch test {rel} fails on the wired backend ({after.summary()}: {after.last_line})",
                              f"run `{python} {' '.join(switch_test.run_argv('', layout, backend)[1:])}` "
                              f"in {ctx.ledger.relpath(backend)} and fix the wiring", switch_test_wired=after.summary())
    unwired, why = _unwired_copy(ctx, backend, layout.path, scratch / "unwired")
    if unwired is None:
        return Outcome.passed(f"switch test: passes wired ({after.summary()}); {why}",
                              switch_test=f"passes wired ({after.summary()})", switch_test_wired=after.summary())
    before, lacking = _run_switch_test(python, layout, backend, unwired, env)
    if before is None or (lacking and before.passed + before.failed == 0):
        return Outcome.warn(f"switch test: passes wired ({after.summary()}); not run un-wired: {lacking}",
                            switch_test_wired=after.summary())
    facts = {"switch_test_wired": after.summary(), "switch_test_unwired": before.summary()}
    if before.passed + before.failed == 0:
        return Outcome.failed(f"switch test {rel} did not run on the un-wired backend ({before.last_line})",
                              "run it by hand on a copy of the backend from before phase2 --scaffold", **facts)
    if not before.vllm_case_failed:
        return Outcome.failed(f"switch test {rel} passes its LLM_BACKEND=vllm case on the un-wired backend too "
                              f"({before.summary()}): it cannot tell a working migration from a broken one",
                              "check what its factories build (its docstring names what it could not build)",
                              **facts)
    proven = f"fails un-wired ({before.summary()}), passes wired ({after.summary()})"
    return Outcome.passed(f"switch test: {proven}", switch_test=proven, **facts)


# The API key comes in through the environment, never argv: `ps` shows every process's command line.
CONTRACT_SCRIPT = """
import json, os, sys, time
from langchain_openai import ChatOpenAI
llm = ChatOpenAI(base_url=sys.argv[1], model=sys.argv[2], api_key=os.environ.get("VLLM_API_KEY") or "EMPTY",
                 max_tokens=8, streaming=True)
start, first, chunks = time.perf_counter(), None, 0
for chunk in llm.stream([("human", "Say hello.")]):
    if chunk.content:
        chunks += 1
        first = first or (time.perf_counter() - start) * 1000
print(json.dumps({"chunks": chunks, "ttft_ms": first}))
"""


class ClientContract(Step):
    id = "phase2.client-contract"
    title = "the backend's client (ChatOpenAI, streaming) gets a streamed answer from vLLM"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        import json
        import subprocess

        from migrator.adapters import vllm as vllm_launch
        from migrator.adapters.http import OpenAIServer

        v = ctx.settings.vllm
        base = v.url
        if not OpenAIServer(base).health(timeout=2).ok:
            return Outcome.failed(f"vLLM does not answer at {base}", "run phase1 first")
        python = ctx.settings.backend.python
        env = {**os.environ, "VLLM_API_KEY": vllm_launch.api_key(ctx.settings) or ""}
        try:
            proc = subprocess.run([python, "-c", CONTRACT_SCRIPT, base + "/v1", ctx.settings.model.served_name],
                                  capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)
        except FileNotFoundError:
            proc, why = None, f"{python} not found (backend.python)"
        except subprocess.TimeoutExpired:
            proc, why = None, f"ChatOpenAI in {python} did not finish in 120 s"
        else:
            why = f"langchain-openai not importable by {python}"
        if proc is not None and proc.returncode == 0:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            thinking = _thinking_in_reasoning(ctx, base)
            if result["chunks"] >= 1 and not thinking:
                return Outcome.passed(f"langchain_openai.ChatOpenAI streamed {result['chunks']} chunks, "
                                      f"TTFT {result['ttft_ms']:.0f} ms", client="langchain_openai", **result)
            if thinking:  # output came, as delta.reasoning: ChatOpenAI drops it
                return Outcome.warn(
                    f"langchain_openai.ChatOpenAI streamed {result['chunks']} answer chunks in 8 tokens; vLLM also "
                    f"streamed {thinking} chunks of thinking in delta.reasoning (model.reasoning: parse), which "
                    "ChatOpenAI drops: the backend's max_tokens must cover the thinking and the answer, or its "
                    "answers come back empty — or set model.reasoning: off", client="langchain_openai",
                    reasoning_chunks=thinking, **result)
            return Outcome.failed("ChatOpenAI got no content from vLLM", "check VLLM_MODEL = model.served_name")
        if proc is not None and "No module named 'langchain_openai'" not in proc.stderr:
            return Outcome.failed(f"ChatOpenAI failed: {proc.stderr.strip().splitlines()[-1][:200]}",
                                  "check the backend's settings against vLLM")
        # The backend's python has no langchain-openai here: check the same HTTP contract ourselves.
        s = OpenAIServer(base, vllm_launch.api_key(ctx.settings)).stream(
            ctx.settings.model.served_name, [{"role": "user", "content": "Say hello."}], max_tokens=8, timeout=60)
        if not s.ok:
            return Outcome.failed(f"streamed answer from vLLM failed: {s.error}")
        return Outcome.warn(f"{why}: checked the same stream over HTTP "
                             f"({s.content_chunks} chunks" + (f" and {s.reasoning_chunks} of delta.reasoning, which "
                                                              "ChatOpenAI drops" if s.reasoning_chunks else "")
                             + f", TTFT {s.ttft_ms or 0:.0f} ms)", client="http",
                             chunks=s.content_chunks, reasoning_chunks=s.reasoning_chunks, ttft_ms=s.ttft_ms)


def _thinking_in_reasoning(ctx: Context, base: str) -> int:
    """Chunks of delta.reasoning vLLM streams for the client check's request (0: none) — what ChatOpenAI
    silently drops, so its answer is shorter than its max_tokens, or empty."""
    from migrator.adapters import vllm as vllm_launch
    from migrator.adapters.http import OpenAIServer

    s = OpenAIServer(base, vllm_launch.api_key(ctx.settings)).stream(
        ctx.settings.model.served_name, [{"role": "user", "content": "Say hello."}], max_tokens=8, timeout=60)
    return s.reasoning_chunks


def build(settings: Settings, options: dict) -> Phase:
    steps: list[Step] = [SwitchWiring()] if options.get("scaffold") else []
    steps += [SettingsFields(), OpenAIClient(), Requirement(), BackendUnitTests(), ClientContract()]
    return Phase("phase2", "backend wiring", steps)
