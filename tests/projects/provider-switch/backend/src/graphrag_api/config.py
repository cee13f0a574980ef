"""Settings from GRAPHRAG_* variables; the provider is the shared, unprefixed LLM_PROVIDER."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRAPHRAG_", env_file=".env", extra="ignore")

    llm_provider: str = Field(default="ollama", validation_alias="LLM_PROVIDER")  # ollama | openai
    ollama_base_url: str = "http://localhost:11434"
    ollama_model: str = "qwen2.5:14b-instruct"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_model: str = "gpt-4o-mini"
    temperature: float = 0.0
    top_k: int = 5


settings = Settings()
