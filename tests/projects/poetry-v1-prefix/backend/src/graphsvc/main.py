"""Graph Q&A API: /health and a server-sent-events /query."""

import json

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from graphsvc.llm import llm
from graphsvc.settings import settings

app = FastAPI(title="graphsvc")


class Query(BaseModel):
    text: str
    top_k: int = 5


@app.get("/health")
def health():
    return {"status": "ok"}


def _prompt(query: Query) -> list[tuple[str, str]]:
    system = f"You answer questions about the '{settings.graph_name}' graph. Be concise."
    return [("system", system), ("human", query.text)]


@app.post("/query")
async def query(q: Query):
    async def events():
        async for chunk in llm.astream(_prompt(q)):
            if chunk.content:
                yield f"data: {json.dumps({'token': chunk.content})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
