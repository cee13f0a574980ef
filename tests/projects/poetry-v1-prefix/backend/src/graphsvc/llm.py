"""LLM client for graph answers."""

from langchain_ollama import ChatOllama

from graphsvc.settings import settings

llm = ChatOllama(
    base_url=settings.ollama_base_url,
    model=settings.ollama_model,
    temperature=settings.temperature,
)
