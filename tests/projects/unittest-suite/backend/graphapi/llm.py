"""The answering model."""

from langchain_ollama import ChatOllama

from .settings import Settings


def make_llm(settings: Settings) -> ChatOllama:
    return ChatOllama(base_url=settings.ollama_host, model=settings.chat_model,
                      temperature=settings.answer_temperature)
