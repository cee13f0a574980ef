"""The Ollama chat model and the system prompt that names the graph's entities."""

from langchain_ollama import ChatOllama

from .config import Settings


def get_llm(settings: Settings) -> ChatOllama:
    return ChatOllama(base_url=settings.ollama_base_url, model=settings.ollama_model,
                      num_predict=settings.num_predict)


def system_prompt(entities: list[str]) -> str:
    # PEP 701 (Python 3.12): the replacement field reuses the f-string's own double quotes.
    return f"You answer questions about the knowledge graph. Known entities: {", ".join(entities) or "none"}."
