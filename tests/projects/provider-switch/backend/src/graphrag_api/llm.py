"""The LLM for the configured provider: one table of endpoints, one constructor per provider family."""

from langchain_core.language_models import BaseChatModel
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from .config import settings

PROVIDER_BASE_URLS = {
    "ollama": settings.ollama_base_url,
    "openai": settings.openai_base_url,
}


def make_llm() -> BaseChatModel:
    if settings.llm_provider not in PROVIDER_BASE_URLS:
        raise ValueError(f"LLM_PROVIDER={settings.llm_provider!r}: expected one of {sorted(PROVIDER_BASE_URLS)}")
    base_url = PROVIDER_BASE_URLS[settings.llm_provider]
    if settings.llm_provider == "ollama":
        return ChatOllama(base_url=base_url, model=settings.ollama_model, temperature=settings.temperature)

    options = {
        "base_url": base_url,
        "model": settings.openai_model,
        "api_key": settings.openai_api_key or "unused",
        "temperature": settings.temperature,
        "streaming": True,
    }
    return ChatOpenAI(**options)
