"""HTTP API: one streaming chat endpoint over the knowledge graph."""

import logging

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel

from .config import settings
from .llm import chat_model

logging.basicConfig(level=settings.log_level.upper())
app = FastAPI(title="graphrag-service")
llm = chat_model()

SYSTEM = "Answer from the knowledge graph's context. Say so when the context does not contain the answer."


class ChatIn(BaseModel):
    message: str


@app.post("/chat")
async def chat(body: ChatIn) -> StreamingResponse:
    messages = [SystemMessage(SYSTEM), HumanMessage(body.message)]

    async def tokens():
        async for chunk in llm.astream(messages):
            if chunk.content:
                yield chunk.content

    return StreamingResponse(tokens(), media_type="text/plain; charset=utf-8")
