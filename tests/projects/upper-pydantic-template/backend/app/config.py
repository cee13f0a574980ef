"""Settings: the field names are the environment names, case and all."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    APP_NAME: str = "GraphRAG Assistant"
    OLLAMA_BASE_URL: str = "http://localhost:11434"
    OLLAMA_CHAT_MODEL: str = "mistral:7b-instruct"
    TEMPERATURE: float = 0.0
    KEEP_ALIVE: str = "5m"

    model_config = SettingsConfigDict(case_sensitive=True, env_file=".env")


@lru_cache
def get_settings() -> Settings:
    return Settings()
