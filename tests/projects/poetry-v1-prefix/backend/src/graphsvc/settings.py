"""Service configuration. Written against pydantic 1; still works on pydantic 2 through pydantic.v1."""

try:
    from pydantic import BaseSettings
except ImportError:  # pydantic 2 moved BaseSettings out
    from pydantic.v1 import BaseSettings


class Settings(BaseSettings):
    ollama_base_url: str = "http://localhost:11434"
    ollama_model: str = "mistral:7b-instruct"
    temperature: float = 0.2
    graph_name: str = "default"

    class Config:
        env_prefix = "APP_"


settings = Settings()
