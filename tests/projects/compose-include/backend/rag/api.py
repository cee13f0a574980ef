"""HTTP entry point."""

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .chain import build_chain
from .config import load_settings

settings = load_settings()
chain = build_chain(settings)
app = FastAPI(title="rag backend")


class ChatRequest(BaseModel):
    message: str


def graph_context(question: str) -> str:
    return "(graph retrieval is outside this example)"


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/chat")
async def chat(req: ChatRequest):
    inputs = {"context": graph_context(req.message), "question": req.message}
    return StreamingResponse(chain.astream(inputs), media_type="text/plain; charset=utf-8")
