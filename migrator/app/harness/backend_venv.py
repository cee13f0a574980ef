"""A Python 3.12 venv with a backend's packages, for running a 3.12-only fixture (tests only).

The `py312-dockerfile` fixture uses 3.12 syntax, so the tool's 3.11 cannot import it; its scaffolded
switch test must still really run, fail before the wiring and pass after, under the backend's own
Python, and the Docker e2e test serves its app with this venv's uvicorn (the venv and the interpreter
bind-mounted into the test's backend container: same Debian as this host). The venv is built once under the cache directory, keyed by a hash of the interpreter's version and
the requirements (a change of either builds a new one), under a `.partial` name renamed only after its
packages import — a half-built venv is never taken for a good one.

    python -m migrator.app.harness.backend_venv install     # prints the venv's python
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from migrator.app.harness.vllm_cpu import cache_dir

# The fixtures' backends' own packages, at the versions the tool's tests use on 3.11.
REQUIREMENTS = ("fastapi==0.165.0", "uvicorn==0.54.0", "langchain-ollama==1.1.0", "langchain-openai==1.7.4", "pydantic-settings==2.14.1", "pytest==9.0.3")
IMPORTS = "import fastapi, uvicorn, langchain_ollama, langchain_openai, pydantic_settings, pytest"


class VenvUnavailable(Exception):
    """No 3.12 interpreter here, or pip could not install the packages (the message says which, exactly)."""


def find_python(version: str = "3.12") -> str | None:
    """An interpreter of that version that runs (a pyenv shim for a version not selected is on PATH yet
    fails, so each candidate is run, not just found)."""
    candidates = [shutil.which(f"python{version}")]
    for root in (os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv"), "/root/.pyenv"):
        if root:
            candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for exe in filter(None, candidates):
        try:
            probe = subprocess.run([exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return exe
    return None


def _version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()


def venv_dir(python: str, version: str = "3.12") -> Path:
    key = hashlib.sha256("\n".join([_version(python), *REQUIREMENTS]).encode()).hexdigest()[:12]
    return cache_dir() / "venvs" / f"py{version.replace('.', '')}-backend-{key}"


def _log(message: str) -> None:
    print(f"[backend-venv] {message}", file=sys.stderr, flush=True)


def install(version: str = "3.12") -> Path:
    """The venv's python: cached, or built now (about 20 s with the local wheel index)."""
    python = find_python(version)
    if python is None:
        raise VenvUnavailable(f"no working python{version} here (PATH, ~/.pyenv/versions)")
    final = venv_dir(python, version)
    if (final / "bin" / "python").exists():
        return final / "bin" / "python"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    _log(f"building {final} with {python}: pip install {' '.join(REQUIREMENTS)}")
    for argv in ([python, "-m", "venv", str(partial)],
                 [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *REQUIREMENTS],
                 [str(partial / "bin" / "python"), "-c", IMPORTS]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or \
                proc.stderr.strip().splitlines()[-3:]
            shutil.rmtree(partial, ignore_errors=True)
            raise VenvUnavailable(f"`{' '.join(argv[:3])} …` failed: {' | '.join(errors)[:600]}")
    partial.rename(final)
    return final / "bin" / "python"


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m migrator.app.harness.backend_venv install")
    try:
        print(install())
    except VenvUnavailable as exc:
        sys.exit(f"[backend-venv] {exc}")
