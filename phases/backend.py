"""The backend, waited for and proven: after phase4's switch, on staging, and after a rollback.

Answering: the backend's `/health` where it has one (any 2xx counts: most say only `{"status": "ok"}`);
without one (404/405/501), its chat endpoint answering at all. What `/health` says about its LLM
(`llm_backend`, a field only some backends have) is corroboration: a value other than the expected one is a
failure, no value proves nothing.

Proven: one short question through the backend's chat endpoint, with vLLM's /metrics scraped before and
after. The backend is on vLLM only if vLLM's completed-request counter rose by at least one and it generated
tokens while the backend answered 2xx with a body; it is on Ollama (after a rollback) if it answered and
vLLM's counter did not rise (or vLLM is down). A backend that still builds its client from a hard-coded URL
answers as well as one on vLLM — only vLLM's counters tell them apart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

NO_HEALTH = (404, 405, 501)  # no /health route: the backend is judged by its chat endpoint answering
PROOF_QUESTION = "In one sentence: what does a knowledge graph connect?"
SUCCESS, GENERATED, PROMPT = ("vllm:request_success_total", "vllm:generation_tokens_total",
                              "vllm:prompt_tokens_total")


def health_url(backend_url: str) -> str:
    return backend_url.rstrip("/") + "/health"


def chat_url(backend_url: str, chat_path: str) -> str:
    return backend_url.rstrip("/") + chat_path


@dataclass
class Answer:
    """The backend answering at all, and what its /health says of its LLM."""

    answered: bool  # it answers HTTP where it should (a 2xx /health, or its chat route without one)
    url: str
    health: str = ""  # "llm_backend=…" | "plain" (a 2xx without the field) | "none" (no /health)
    llm_backend: str | None = None
    detail: str = ""  # why it does not count as answering
    seconds: float = 0.0
    ok: bool = False  # answered, and its llm_backend (if any) accepted

    @property
    def claim(self) -> str:
        return f" (its /health claims llm_backend={self.llm_backend})" if self.llm_backend else ""


def probe_answer(backend_url: str, chat_path: str = "") -> Answer:
    """One look: /health (any 2xx), else — no /health route — the chat route answering a GET at all
    (a POST-only route says 405: it is there; no question is sent, so no LLM is asked)."""
    from migrator.adapters.http import get

    url = health_url(backend_url)
    h = get(url, timeout=2.0)
    if h.ok:
        llm = h.body.get("llm_backend") if isinstance(h.body, dict) else None
        return Answer(True, url, f"llm_backend={llm}" if llm else "plain", llm)
    if h.status in NO_HEALTH:
        if not chat_path:
            return Answer(True, url, "none")  # it answers HTTP; there is no chat route to look at
        c = get(chat_url(backend_url, chat_path), timeout=2.0)
        if c.status is not None:
            return Answer(True, chat_url(backend_url, chat_path), "none")
        return Answer(False, chat_url(backend_url, chat_path), "none", detail=c.describe())
    if h.status is not None:
        return Answer(False, url, detail=f"/health answered HTTP {h.status}")
    return Answer(False, url, detail=h.error)


def wait_until_answers(backend_url: str, chat_path: str, wait_s: float,
                       accept: Callable[[str | None], bool] = lambda llm: True,
                       interval_s: float = 0.25) -> Answer:
    """Probe until the backend answers with an accepted `llm_backend` (or none), or `wait_s` runs out."""
    start = time.monotonic()
    while True:
        seen = probe_answer(backend_url, chat_path)
        seen.seconds = round(time.monotonic() - start, 2)
        seen.ok = seen.answered and accept(seen.llm_backend)
        if seen.ok or seen.seconds >= wait_s:
            return seen
        time.sleep(interval_s)


@dataclass
class Proof:
    ok: bool
    message: str
    fix: str = ""
    measurements: dict = field(default_factory=dict)
    answered: bool = False  # the backend answered (its /health or chat route), whatever else


def vllm_counters(vllm_url: str) -> dict | None:
    """vLLM's completed requests and tokens, summed over labels; None when /metrics does not answer or
    lacks the request counter (nothing could then be proven from it)."""
    from migrator.adapters.http import OpenAIServer
    from migrator.core import promql

    scrape = OpenAIServer(vllm_url).metrics_text(timeout=5)
    if not scrape.ok or not isinstance(scrape.body, str):
        return None
    samples = promql.parse(scrape.body)
    if not any(name == SUCCESS for name, _labels, _value in samples):
        return None
    return {"requests": promql.total(samples, SUCCESS), "generation_tokens": promql.total(samples, GENERATED),
            "prompt_tokens": promql.total(samples, PROMPT)}


def ask(url: str, message_field: str, question: str, timeout: float = 60.0) -> tuple[int | None, bytes, str]:
    """POST one question and read the reply to its end (streamed or not): (status, body, error)."""
    from migrator.adapters.http import post_and_read

    reply = post_and_read(url, {message_field: question}, timeout)
    if reply.status is None:
        return None, b"", reply.error
    if reply.cut is not None:  # dropped, timed out or cut off (IncompleteRead) mid-answer
        return None, reply.body, (f"{type(reply.cut).__name__} while reading the answer from {url} after "
                                  f"{len(reply.body)} bytes: {reply.cut!r}"[:300])
    return reply.status, reply.body, ""


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            text = str(parsed.get("detail") or parsed.get("error") or text)
    except ValueError:
        pass
    return text[:200] or "(empty body)"


def _delta(before: dict, after: dict) -> dict:
    # A counter that went down was reset (vLLM restarted): count from zero, as Prometheus does.
    return {k: after[k] - before[k] if after[k] >= before[k] else after[k] for k in before}


def prove_llm(backend_url: str, chat_path: str, message_field: str, vllm_url: str, expect: str,
              wait_s: float, when: str, settle_s: float = 3.0) -> Proof:
    """Wait for the backend, ask it one question, and judge from vLLM's counters which LLM answered.

    `expect` is "vllm" (after the switch) or "ollama" (after a rollback); `when` ends the messages
    ("after the switch"). The figures go into `measurements` either way."""
    start = time.monotonic()
    seen = wait_until_answers(backend_url, chat_path, wait_s, lambda llm: llm in (None, expect))
    m: dict = {"backend_health": seen.health or "-", "backend_answered_s": seen.seconds}
    if not seen.answered:
        return Proof(False, f"backend did not answer in {wait_s:g} s {when} ({seen.detail or seen.url})",
                     "see the backend's own log: it did not come back; raise backend.wait_s if it starts slowly",
                     m)
    if not seen.ok:
        return Proof(False, f"backend reports llm_backend={seen.llm_backend} {wait_s:g} s {when}",
                     "the backend did not re-read the env file: recreate it (project.backend_runtime)", m,
                     answered=True)
    before = vllm_counters(vllm_url)
    if expect == "vllm" and before is None:
        return Proof(False, f"vLLM's /metrics does not answer at {vllm_url} (or has no {SUCCESS}): "
                     "the switch cannot be proven", "see vLLM's log (`graphrag-migrate status`)", m, True)
    url = chat_url(backend_url, chat_path)
    asked = time.monotonic()
    status, body, error = ask(url, message_field, PROOF_QUESTION)
    m.update(answer_status=status, answer_bytes=len(body), answer_s=round(time.monotonic() - asked, 2))
    if status is None:
        return Proof(False, f"backend {chat_path} did not answer the question {when}: {error}",
                     "see the backend's own log", m, True)
    if not 200 <= status < 300:
        return Proof(False, f"backend answered HTTP {status} {when}: {_excerpt(body)}",
                     "see the backend's own log: its chat endpoint fails on this LLM "
                     "(VLLM_MODEL must be model.served_name)", m, True)
    if not body.strip():
        return Proof(False, f"backend answered HTTP {status} with an empty body {when}",
                     "see the backend's own log", m, True)
    after = vllm_counters(vllm_url)
    if expect == "vllm":  # vLLM counts a request as its engine finishes it: a moment after the last byte
        deadline = time.monotonic() + settle_s
        while after is not None and after["requests"] <= before["requests"] and time.monotonic() < deadline:
            time.sleep(0.1)
            after = vllm_counters(vllm_url)
    elif before is not None and after is not None:  # a late count would still show: look again shortly
        time.sleep(min(settle_s, 0.5))
        after = vllm_counters(vllm_url)
    m["proof_s"] = round(time.monotonic() - start, 2)
    if before is not None and after is not None:
        d = _delta(before, after)
        m.update(vllm_requests_delta=int(d["requests"]), vllm_generation_tokens_delta=int(d["generation_tokens"]),
                 vllm_prompt_tokens_delta=int(d["prompt_tokens"]))
    answered = f"the backend answered HTTP {status}, {len(body)} bytes in {m['answer_s']:g} s"
    if expect == "vllm":
        if after is None:
            return Proof(False, f"vLLM's /metrics stopped answering at {vllm_url} during the proof",
                         "see vLLM's log (`graphrag-migrate status`)", m, True)
        if m["vllm_requests_delta"] < 1:
            return Proof(False, "the backend answered but vLLM served no request: the backend is not reading "
                         f"LLM_BACKEND/VLLM_BASE_URL{seen.claim}",
                         "make the backend build its LLM client from LLM_BACKEND and VLLM_BASE_URL "
                         "(`graphrag-migrate phase2` checks its source)", m, True)
        if m["vllm_generation_tokens_delta"] <= 0:
            return Proof(False, f"vLLM counted {m['vllm_requests_delta']} request(s) but generated no tokens",
                         "see vLLM's log", m, True)
        return Proof(True, f"proven through {chat_path}: vLLM served {m['vllm_requests_delta']} request(s), "
                     f"{m['vllm_generation_tokens_delta']} tokens generated; {answered}", measurements=m,
                     answered=True)
    if before is not None and after is not None and m["vllm_requests_delta"] >= 1:
        return Proof(False, f"the backend answered through vLLM (vLLM served {m['vllm_requests_delta']} "
                     f"request(s)), not Ollama {when}", "the backend still reads LLM_BACKEND=vllm: recreate it",
                     m, True)
    why = "vLLM's request counter did not rise" if before is not None and after is not None else "vLLM is down"
    return Proof(True, f"answered through Ollama ({why}; {answered})", measurements=m, answered=True)
