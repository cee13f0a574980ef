"""Runtime configuration: plain environment variables, read once at import (compose passes them in)."""

import os

OLLAMA_HOST = os.getenv("OLLAMA_HOST", "http://localhost:11434")
LLM_MODEL = os.getenv("LLM_MODEL", "llama3.1:8b")
LLM_TEMPERATURE = float(os.getenv("LLM_TEMPERATURE", "0.2"))
NUM_CTX = int(os.getenv("NUM_CTX", "8192"))
LOG_LEVEL = os.getenv("LOG_LEVEL", "info")
