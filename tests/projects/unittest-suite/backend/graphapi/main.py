"""GraphRAG API: /health and a streaming /chat."""

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .llm import make_llm
from .settings import Settings

settings = Settings()
app = FastAPI(title="GraphRAG API")
llm = make_llm(settings)


class Question(BaseModel):
    question: str


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/chat")
async def chat(q: Question):
    async def body():
        async for chunk in llm.astream([("human", q.question)]):
            if chunk.content:
                yield chunk.content

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
