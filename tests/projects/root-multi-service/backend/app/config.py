"""Settings shared by the API and the worker; values come from the environment (.env via compose)."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    ollama_base_url: str = "http://localhost:11434"
    ollama_model: str = "llama3.1:8b"
    temperature: float = 0.1
    summary_interval_s: float = 30.0
    inbox_dir: str = "/data/inbox"
    log_level: str = "info"


settings = Settings()
