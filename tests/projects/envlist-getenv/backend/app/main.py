"""graph-chat API: POST /api/chat streams the answer as plain text; /healthz for the orchestrator."""

import logging

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.llm import build_chain
from app.settings import LOG_LEVEL

logging.basicConfig(level=LOG_LEVEL.upper())
log = logging.getLogger("graph-chat")

app = FastAPI(title="graph-chat")
chain = build_chain()


class ChatBody(BaseModel):
    question: str


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.post("/api/chat")
async def chat(body: ChatBody):
    log.info("question: %.80s", body.question)

    async def tokens():
        async for chunk in chain.astream({"question": body.question}):
            if chunk.content:
                yield chunk.content

    return StreamingResponse(tokens(), media_type="text/plain; charset=utf-8")
