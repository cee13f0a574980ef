"""The answer chain: a prompt template piped into the chat model."""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_ollama import ChatOllama

from .config import Settings

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You are a retrieval assistant. Use only facts from the graph context.\n\nContext:\n{context}"),
    ("human", "{question}"),
])


def build_chain(settings: Settings):
    model = ChatOllama(base_url=settings.ollama_url, model=settings.ollama_model,
                       client_kwargs={"timeout": settings.request_timeout_s})
    return PROMPT | model | StrOutputParser()
