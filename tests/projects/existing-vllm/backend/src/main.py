"""GraphRAG backend: /health and a streaming /chat with per-session history."""

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .core.config import settings
from .core.llm import get_llm

app = FastAPI(title="GraphRAG backend")
llm = get_llm(settings)
sessions: dict[str, list[tuple[str, str]]] = {}
SYSTEM_PROMPT = "You answer questions about the knowledge graph, in the user's language."


class ChatRequest(BaseModel):
    message: str
    session_id: str = "default"


@app.get("/health")
def health():
    return {"status": "ok", "llm": "ollama", "model": settings.ollama_model}


@app.post("/chat")
async def chat(req: ChatRequest):
    history = sessions.setdefault(req.session_id, [])
    messages = [("system", SYSTEM_PROMPT), *history, ("human", req.message)]

    async def body():
        parts = []
        async for chunk in llm.astream(messages):
            if chunk.content:
                parts.append(chunk.content)
                yield chunk.content
        history.extend([("human", req.message), ("ai", "".join(parts))])

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
