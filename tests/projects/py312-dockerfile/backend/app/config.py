"""Backend settings, read from the environment (compose passes docker/.env)."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    llm_backend: str = "ollama"
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "gemma2:9b"
    num_predict: int = 512


settings = Settings()
