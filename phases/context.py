"""What the switch would change for the prompts the backend sends today: Ollama's context against vLLM's.

Ollama silently truncates a prompt longer than its context; vLLM refuses one longer than max_model_len with
HTTP 400. Since Ollama 0.15.5 the default context is sized from the box's memory (up to the model's own:
40,960 for qwen3:32b), so on a large box prompts far longer than vllm.max_model_len work today.
"""

from __future__ import annotations

from migrator.core.engine import Context, Outcome, Step


def ollama_context(ctx: Context) -> tuple[int | None, str]:
    """(tokens, where from): the loaded model's context (/api/ps), else the model's own maximum (/api/show),
    which a fresh load may reach; (None, why) when Ollama does not say."""
    from migrator.adapters.http import OllamaServer

    server, model = OllamaServer(ctx.settings.ollama.url), ctx.settings.ollama.model
    names = {model, model if ":" in model else f"{model}:latest"}
    loaded = server.loaded()
    if not loaded.ok:
        return None, f"Ollama not answering at {server.base_url}"
    for entry in (loaded.body or {}).get("models", []) if isinstance(loaded.body, dict) else []:
        if {entry.get("name"), entry.get("model")} & names and entry.get("context_length"):
            return int(entry["context_length"]), f"{model} is loaded with it (/api/ps)"
    show = server.show(model)
    info = show.body.get("model_info") if show.ok and isinstance(show.body, dict) else None
    maximum = next((v for k, v in (info or {}).items() if k.endswith(".context_length") and isinstance(v, int)), None)
    if maximum:
        return maximum, (f"{model}'s own maximum (/api/show; not loaded now — Ollama ≥ 0.15.5 sizes its context "
                         "from memory, up to this)")
    return None, f"Ollama reports no context for {model}"


class OllamaContext(Step):
    id = "phase1.ollama-context"
    title = "vLLM's max_model_len holds the prompts Ollama takes today"
    read_only = True

    def check(self, ctx: Context) -> Outcome:
        tokens, source = ollama_context(ctx)
        limit = ctx.settings.vllm.max_model_len
        if tokens is None:
            return Outcome.passed(f"{source}: not compared with max_model_len {limit}")
        if tokens > limit:
            return Outcome.warn(
                f"Ollama's context is {tokens} tokens ({source}) but vllm.max_model_len is {limit}: a prompt "
                f"between {limit} and {tokens} tokens that Ollama takes today gets HTTP 400 from vLLM — raise "
                f"vllm.max_model_len (phase1 --check judges whether it fits) or measure your longest prompt "
                "(phase3 --prompt-file)", ollama_context_length=tokens, max_model_len=limit)
        return Outcome.passed(f"Ollama's context {tokens} tokens ({source}) ≤ max_model_len {limit}",
                              ollama_context_length=tokens, max_model_len=limit)
