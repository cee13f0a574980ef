"""GraphRAG assistant API: /health and a streaming /chat."""

from typing import Literal

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_ollama import ChatOllama
from pydantic import BaseModel

from app.config import get_settings
from app.llm import get_llm

app = FastAPI(title=get_settings().APP_NAME)
SYSTEM = SystemMessage("Answer from the knowledge graph. Cite entity names exactly as they appear.")


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    message: str
    history: list[Turn] = []


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/chat")
async def chat(req: ChatRequest, llm: ChatOllama = Depends(get_llm)):
    past = [HumanMessage(t.content) if t.role == "user" else AIMessage(t.content) for t in req.history]
    messages = [SYSTEM, *past, HumanMessage(req.message)]

    async def stream():
        async for chunk in llm.astream(messages):
            yield chunk.content

    return StreamingResponse(stream(), media_type="text/plain")
