"""Sandbox backend — a stand-in for the user's GraphRAG FastAPI backend, used by `rehearse`.

It re-reads the env file on every request (so `backend_runtime: none` applies: no recreate needed),
answers /health with the active `llm_backend` and model, and proxies /chat to vLLM (OpenAI API) or
Ollama (native API) by LLM_BACKEND, as the real backend's ChatOpenAI / ChatOllama switch does.

Real backends come in other shapes, and phase4 must prove the switch on each: `--health plain` answers
`{"status": "ok"}` (most FastAPI apps), `--health none` has no /health at all (404), and
`--ignore-llm-backend` is a mis-wired backend that talks to Ollama whatever LLM_BACKEND says — while its
/health (default `llm-field`) still claims the env file's value, the lie a /health-only check believes.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

from migrator.sim.httpserver import HTTPServer, Request, Response, run_forever


def read_env(path: Path | None) -> dict[str, str]:
    """The env file's values, or (no file given) this process's environment, fixed at start.

    Read the way a real backend reads it (pydantic-settings uses python-dotenv); where python-dotenv is
    not installed (the stand-ins' image is standard library only) a plain KEY=VALUE reader does."""
    import os

    if path is None:
        return dict(os.environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        from dotenv import dotenv_values
    except ImportError:
        return _plain_env(text)
    import io

    return {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text)).items()}


def _plain_env(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value.endswith(value[0]) and len(value) > 1:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


HEALTH_SHAPES = ("llm-field", "plain", "none")


def make_handler(env_path: Path | None, health: str = "llm-field", ignore_llm_backend: bool = False):
    async def handle(req: Request) -> Response:
        env = read_env(env_path)
        backend = env.get("LLM_BACKEND", "ollama") or "ollama"  # what the backend believes (and reports)
        if req.path == "/health" and health != "none":
            if health == "plain":
                return Response.json({"status": "ok"})
            model = env.get("VLLM_MODEL") if backend == "vllm" else env.get("OLLAMA_MODEL", "qwen3:32b")
            return Response.json({"status": "ok", "llm_backend": backend, "model": model})
        if req.path == "/chat" and req.method == "POST":
            question = (req.json() or {}).get("message", "")
            if backend == "vllm" and not ignore_llm_backend:
                url = env.get("VLLM_BASE_URL", "").rstrip("/") + "/chat/completions"
                body = {"model": env.get("VLLM_MODEL"), "max_tokens": 16,
                        "messages": [{"role": "user", "content": question}]}
                # As ChatOpenAI: the answer is `content`; vLLM's `reasoning` (a thinking Qwen3) is dropped.
                answer = lambda r: r["choices"][0]["message"]["content"] or ""  # noqa: E731
            else:
                url = env.get("OLLAMA_BASE_URL", "http://127.0.0.1:11434").rstrip("/") + "/api/chat"
                body = {"model": env.get("OLLAMA_MODEL", "qwen3:32b"), "stream": False,
                        "messages": [{"role": "user", "content": question}], "options": {"num_predict": 16}}
                answer = lambda r: r["message"]["content"]  # noqa: E731
            request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:  # loopback only (sandbox)
                    return Response.json({"llm_backend": backend, "answer": answer(json.loads(resp.read()))})
            except OSError as exc:
                return Response.json({"llm_backend": backend, "error": str(exc)}, 503)
        return Response.json({"detail": "Not Found"}, 404)

    return handle


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m migrator.sim.backend")
    p.add_argument("--env-file", type=Path, default=None,
                   help="re-read this file on every request (default: use the process environment)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--health", choices=HEALTH_SHAPES, default="llm-field",
                   help="/health's shape: llm-field (status, llm_backend, model), plain ({status: ok}), none (404)")
    p.add_argument("--ignore-llm-backend", action="store_true",
                   help="mis-wired: /chat always goes to Ollama, whatever LLM_BACKEND says (/health still claims it)")
    args = p.parse_args(argv)

    async def start() -> None:
        server = HTTPServer(make_handler(args.env_file, args.health, args.ignore_llm_backend),
                            {"x-stand-in": "graphrag-migrate sandbox backend"})
        await server.start("127.0.0.1", args.port)
        print(f"sandbox backend on 127.0.0.1:{args.port} reading {args.env_file or 'its environment'}", file=sys.stderr, flush=True)

    return run_forever(start, "sandbox backend")


if __name__ == "__main__":
    raise SystemExit(main())
