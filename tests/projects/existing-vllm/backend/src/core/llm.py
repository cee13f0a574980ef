"""The chat model (Ollama)."""

from langchain_ollama import ChatOllama

from .config import Settings


def get_llm(settings: Settings) -> ChatOllama:
    return ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model, num_predict=settings.max_tokens)
