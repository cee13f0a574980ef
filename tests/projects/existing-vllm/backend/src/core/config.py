"""Backend settings (environment variables, case-insensitive; compose passes docker/.env)."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen2.5:14b"
    embedding_model: str = "bge-m3"
    max_tokens: int = 512


settings = Settings()
