"""The chat model, chosen by LLM_BACKEND: Ollama (native API) or vLLM (OpenAI-compatible API)."""

from .config import Settings


def get_llm(settings: Settings):
    if settings.llm_backend == "vllm":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(base_url=settings.vllm_base_url, model=settings.vllm_model,
                          api_key=settings.vllm_api_key, max_tokens=settings.max_tokens, streaming=True,
                          stream_usage=True)
    from langchain_ollama import ChatOllama

    return ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model,
                      num_predict=settings.max_tokens)
