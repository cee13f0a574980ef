"""Completion models: one for chat answers, a colder one for summaries."""

from langchain_ollama import OllamaLLM

from settings import settings

answer_llm = OllamaLLM(base_url=settings.ollama_url, model=settings.llm_model, temperature=0.3)
summary_llm = OllamaLLM(base_url=settings.ollama_url, model=settings.llm_model, temperature=0.0, num_predict=400)

ANSWER_PROMPT = """You answer questions about the document graph.
Question: {question}
Answer:"""

SUMMARY_PROMPT = """Summarise the text below in at most {words} words.

{text}

Summary:"""
