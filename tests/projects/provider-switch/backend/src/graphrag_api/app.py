"""The GraphRAG API: POST /v1/ask answers in one JSON document."""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from .config import settings
from .llm import make_llm

app = FastAPI(title="graphrag-api", version="0.3.0")
llm = make_llm()

INSTRUCTIONS = ("You answer questions using the knowledge graph's entities and relations. "
                "If they do not contain the answer, say that you do not know.")


class AskRequest(BaseModel):
    query: str


class AskResponse(BaseModel):
    answer: str


@app.get("/health")
def health():
    return {"status": "ok", "provider": settings.llm_provider}


@app.post("/v1/ask", response_model=AskResponse)
async def ask(req: AskRequest) -> AskResponse:
    try:
        reply = await llm.ainvoke([("system", INSTRUCTIONS), ("human", req.query)])
    except Exception as exc:  # provider down, unknown model, ...
        raise HTTPException(status_code=502, detail=f"{settings.llm_provider}: {exc}") from exc
    return AskResponse(answer=reply.content)
