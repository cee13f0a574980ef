"""The chat model, built once and handed to the routes through FastAPI's dependency injection."""

from functools import lru_cache

from langchain_ollama import ChatOllama

from app.config import get_settings


@lru_cache
def get_llm() -> ChatOllama:
    s = get_settings()
    return ChatOllama(base_url=s.OLLAMA_BASE_URL, model=s.OLLAMA_CHAT_MODEL,
                      temperature=s.TEMPERATURE, keep_alive=s.KEEP_ALIVE)
