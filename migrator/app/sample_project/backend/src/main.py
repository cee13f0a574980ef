"""A GraphRAG-shaped backend: /health reports the active LLM; /chat streams an answer and keeps history."""

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from .core.config import settings
from .core.llm import get_llm

app = FastAPI(title="GraphRAG backend (graphrag-migrate reference sample)")
llm = get_llm(settings)
histories: dict[str, list[tuple[str, str]]] = {}
SYSTEM_PROMPT = "You answer questions about the knowledge graph. Answer in the user's language."


class ChatRequest(BaseModel):
    message: str
    session_id: str = "default"


@app.get("/health")
def health() -> dict:
    model = settings.vllm_model if settings.llm_backend == "vllm" else settings.ollama_model
    return {"status": "ok", "llm_backend": settings.llm_backend, "model": model}


@app.get("/history/{session_id}")
def history(session_id: str) -> dict:
    return {"turns": [{"role": r, "content": c} for r, c in histories.get(session_id, [])]}


@app.post("/chat")
async def chat(request: ChatRequest) -> StreamingResponse:
    turns = histories.setdefault(request.session_id, [])
    messages = [("system", SYSTEM_PROMPT), *turns, ("human", request.message)]
    stream = llm.astream(messages)
    try:
        first = await anext(stream)  # fail here, as an HTTP error, not half-way through a 200
    except StopAsyncIteration:
        first = None
    except Exception as exc:  # the LLM server refused (wrong model, prompt too long …)
        raise HTTPException(status_code=502, detail=f"{settings.llm_backend}: {exc}") from exc

    async def body():
        answer = []
        if first is not None and first.content:
            answer.append(first.content)
            yield first.content
        async for chunk in stream:
            if chunk.content:
                answer.append(chunk.content)
                yield chunk.content
        turns.extend([("human", request.message), ("ai", "".join(answer))])

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
