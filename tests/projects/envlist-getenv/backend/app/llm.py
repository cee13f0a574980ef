"""The chat chain: a prompt in front of the Ollama chat model."""

from langchain_core.prompts import ChatPromptTemplate
from langchain_ollama import ChatOllama

from app.settings import LLM_MODEL, LLM_TEMPERATURE, NUM_CTX, OLLAMA_HOST

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You answer questions about the knowledge graph. Be brief; say so when you do not know."),
    ("human", "{question}"),
])


def create_chat_model() -> ChatOllama:
    return ChatOllama(
        base_url=OLLAMA_HOST,
        model=LLM_MODEL,
        temperature=LLM_TEMPERATURE,
        num_ctx=NUM_CTX,
    )


def build_chain():
    return PROMPT | create_chat_model()
