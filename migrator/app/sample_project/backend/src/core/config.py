"""Backend settings, read from the environment (compose passes docker/.env)."""

from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    llm_backend: str = "ollama"  # ollama | vllm
    ollama_base_url: str = "http://127.0.0.1:11434"
    ollama_model: str = "qwen3:32b"
    vllm_base_url: str = "http://127.0.0.1:8001/v1"
    vllm_model: str = "Qwen/Qwen2.5-32B-Instruct"
    vllm_api_key: str = "EMPTY"
    max_tokens: int = 64


settings = Settings()
