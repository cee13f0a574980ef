"""Settings read from the environment under their upper-case aliases (see config/backend.env)."""

from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    ollama_url: str = Field(default="http://localhost:11434", alias="OLLAMA_HOST")
    llm_model: str = Field(default="llama3.1:8b-instruct-q4_K_M", alias="OLLAMA_MODEL")
    summary_max_words: int = Field(default=120, alias="SUMMARY_MAX_WORDS")


settings = Settings()
