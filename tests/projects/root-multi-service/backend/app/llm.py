"""The API's chat model."""

from langchain_ollama import ChatOllama

from .config import settings


def chat_model() -> ChatOllama:
    return ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model, temperature=settings.temperature)
