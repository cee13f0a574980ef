"""API settings from the environment (compose passes the root .env)."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    ollama_host: str = "http://127.0.0.1:11434"
    chat_model: str = "llama3.1:8b"
    answer_temperature: float = 0.1
