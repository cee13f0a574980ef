"""GraphRAG backend: /health names the active LLM; /chat streams the answer."""

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .config import settings
from .llm import get_llm, system_prompt

app = FastAPI(title="GraphRAG backend")
llm = get_llm(settings)
ENTITIES = ["Person", "Organization", "Project", "Document"]


class ChatRequest(BaseModel):
    message: str


@app.get("/health")
def health() -> dict:
    return {"status": "ok", "llm_backend": settings.llm_backend, "model": settings.ollama_model}


@app.post("/chat")
async def chat(request: ChatRequest) -> StreamingResponse:
    messages = [("system", system_prompt(ENTITIES)), ("human", request.message)]
    stream = llm.astream(messages)
    try:
        first = await anext(stream)  # an LLM error becomes a 502, not a broken 200
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        raise HTTPException(status_code=502, detail=f"{settings.llm_backend}: {exc}") from exc

    async def body():
        if first is not None and first.content:
            yield first.content
        async for chunk in stream:
            if chunk.content:
                yield chunk.content

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
