"""Completion-style API: streaming /chat and a one-shot /summary."""

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from llm import ANSWER_PROMPT, SUMMARY_PROMPT, answer_llm, summary_llm
from settings import settings

app = FastAPI(title="doc-graph completions")


class Question(BaseModel):
    question: str


class Document(BaseModel):
    text: str


@app.get("/health")
def health():
    return {"status": "ok"}


@app.post("/chat")
def chat(q: Question):
    prompt = ANSWER_PROMPT.format(question=q.question)
    return StreamingResponse(answer_llm.stream(prompt), media_type="text/plain; charset=utf-8")


@app.post("/summary")
async def summary(doc: Document):
    prompt = SUMMARY_PROMPT.format(words=settings.summary_max_words, text=doc.text)
    text = await run_in_threadpool(summary_llm.invoke, prompt)
    return {"summary": text.strip()}
