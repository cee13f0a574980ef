"""Qwen3 and the backend's real traffic (issue #15 §3): thinking (model.reasoning off|parse|raw) as vLLM
flags on thinking models only, reasoning deltas counted as output by readiness, phase2's client check, the
integration checks and the load generator (TTFT vs time to the answer); tool calls and json_schema answers
(vllm.tool_calling); Ollama's context against max_model_len. Against the vLLM simulator, which acts on
vLLM 0.32's own flags, the Ollama stand-in, and the real langchain-openai client."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import run_cli
from migrator.adapters import vllm as vllm_launch
from migrator.adapters.http import OpenAIServer, ThinkSplitter
from migrator.bench import loadgen
from migrator.core.config import Settings
from migrator.core.engine import Context
from migrator.core.ledger import Ledger

QWEN3_TEMPLATE = ("{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
                  "<|im_start|>assistant\n{%- if enable_thinking is defined and enable_thinking is false %}"
                  "<think>\n\n</think>\n\n{%- endif %}")
CHATML_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
BIND_TOOLS_CODE = ('from langchain_ollama import ChatOllama\n\n\ndef agent(tools):\n'
                   '    return ChatOllama(model="qwen3:32b").bind_tools(tools)\n')


def sim(servers, *flags: str, name: str = "qwen3") -> str:
    port = servers.start("migrator.sim.vllm", "--served-model-name", name, "--ttft-ms", "2", "--itl-ms", "0.5",
                         *flags)
    return f"http://127.0.0.1:{port}"


def settings_for(url: str, name: str = "qwen3") -> Settings:
    s = Settings()
    s.vllm.port = int(url.rsplit(":", 1)[1])
    s.model.served_name = name
    return s


def events(url: str, body: dict) -> list[dict]:
    with httpx.stream("POST", url + "/v1/chat/completions", json={"model": "qwen3", "stream": True, **body},
                      timeout=30) as resp:
        assert resp.status_code == 200
        data = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def model_dir(root: Path, name: str, template: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


# ---- which flags vLLM gets -------------------------------------------------------------------------------
@pytest.mark.parametrize("reasoning, expected", [
    ("off", ["--default-chat-template-kwargs", '{"enable_thinking": false}']),
    ("parse", ["--reasoning-parser", "qwen3"]),
    ("raw", []),
])
def test_a_qwen3_model_gets_the_flags_of_its_reasoning_mode(reasoning, expected):
    s = Settings()
    s.model.id, s.model.reasoning = "Qwen/Qwen3-32B-AWQ", reasoning
    args = vllm_launch.vllm_args(s, "Qwen/Qwen3-32B-AWQ")
    assert vllm_launch.reasoning_args(s) == expected
    assert args[-len(expected):] == expected if expected else not {"--reasoning-parser",
                                                                   "--default-chat-template-kwargs"} & set(args)


@pytest.mark.parametrize("model_id", ["Qwen/Qwen2.5-32B-Instruct", "Qwen/Qwen3-30B-A3B-Instruct-2507",
                                      "Qwen/Qwen3-Coder-30B-A3B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"])
def test_a_model_without_qwen3s_thinking_switch_never_gets_the_kwarg(model_id):
    s = Settings()
    s.model.id = model_id
    for mode in ("off", "parse", "raw"):
        s.model.reasoning = mode
        args = vllm_launch.vllm_args(s, model_id)
        assert "--default-chat-template-kwargs" not in args and "--reasoning-parser" not in args


def test_a_local_models_chat_template_decides_not_its_name(tmp_path):
    s = Settings()
    thinking = model_dir(tmp_path, "my-finetune", QWEN3_TEMPLATE)
    chatml = model_dir(tmp_path, "Qwen3-renamed-chatml", CHATML_TEMPLATE)
    s.model.id = str(thinking)
    assert vllm_launch.thinking_model(s, str(thinking)) == (True, "its chat template reads enable_thinking")
    assert "--default-chat-template-kwargs" in vllm_launch.process_command(s, str(thinking))
    s.model.id = str(chatml)
    assert vllm_launch.thinking_model(s, str(chatml))[0] is False
    assert "--default-chat-template-kwargs" not in vllm_launch.process_command(s, str(chatml))
    spec = vllm_launch.container_spec(s, tmp_path)  # in a container the model is /model: the template still read
    assert spec["command"][:2] == ["--model", "/model"] and "--default-chat-template-kwargs" not in spec["command"]


def test_the_operators_own_flags_in_extra_args_win():
    s = Settings()
    s.model.id = "Qwen/Qwen3-32B"
    s.vllm.extra_args = ["--reasoning-parser=deepseek_r1", "--tool-call-parser", "qwen3_xml", "--enable-auto-tool-choice"]
    s.vllm.tool_calling = "on"
    args = vllm_launch.vllm_args(s, "Qwen/Qwen3-32B")
    assert args.count("--tool-call-parser") == 1 and "hermes" not in args
    assert "--default-chat-template-kwargs" not in args and args[-4:] == s.vllm.extra_args


def test_tool_calling_follows_the_backends_code(tmp_path):
    backend = tmp_path / "backend"
    (backend / "src").mkdir(parents=True)
    (backend / "src" / "llm.py").write_text('from langchain_ollama import ChatOllama\nllm = ChatOllama(model="m")\n')
    s = Settings()
    assert vllm_launch.tool_calling_evidence(s, tmp_path) == []
    assert "--enable-auto-tool-choice" not in vllm_launch.container_spec(s, tmp_path)["command"]
    (backend / "src" / "agent.py").write_text(BIND_TOOLS_CODE + (
        "\n\ndef extract(llm, Schema):\n    return llm.with_structured_output(Schema)\n\n\n"
        "def react(create_agent, llm, search):\n    return create_agent(llm, tools=[search])\n"))
    (backend / "tests").mkdir()
    (backend / "tests" / "test_agent.py").write_text("def test_x(llm):\n    llm.bind_tools([])\n")  # tests skipped
    assert vllm_launch.tool_calling_evidence(s, tmp_path) == [
        "src/agent.py:5 .bind_tools()", "src/agent.py:9 .with_structured_output()", "src/agent.py:13 tools="]
    command = vllm_launch.container_spec(s, tmp_path)["command"]
    at = command.index("--enable-auto-tool-choice")
    assert command[at:at + 3] == ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
    s.vllm.tool_calling = "off"
    assert "--tool-call-parser" not in vllm_launch.container_spec(s, tmp_path)["command"]


def test_phase3_renders_the_flags_into_the_compose_service(sandbox, cli):
    (sandbox / "backend" / "src").mkdir(parents=True, exist_ok=True)
    (sandbox / "backend" / "src" / "agent.py").write_text(BIND_TOOLS_CODE)
    dry = cli("--project", str(sandbox), "--set", "vllm.runtime=docker", "--set", "model.id=Qwen/Qwen3-32B",
              "--json", "phase3", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    diff = {d["file"]: d["diff"] for d in json.loads(dry.stdout)["diffs"]}["docker/docker-compose.vllm.yml"]
    rendered = yaml.safe_load("\n".join(line[1:] for line in diff.splitlines()[2:] if line.startswith("+")))
    command = rendered["services"]["vllm"]["command"]
    at = command.index("--default-chat-template-kwargs")
    assert json.loads(command[at + 1]) == {"enable_thinking": False}  # one argument, JSON intact through YAML
    assert command[command.index("--tool-call-parser") + 1] == "hermes" and "--enable-auto-tool-choice" in command


# ---- the simulator speaks vLLM 0.32's reasoning ----------------------------------------------------------
def test_the_simulators_default_output_has_no_reasoning(servers):
    url = sim(servers)
    chunks = events(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "ignore_eos": True})
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all(set(d) == {"content"} for d in deltas[1:]) and not any("<think>" in d["content"] for d in deltas)
    doc = httpx.post(url + "/v1/chat/completions", json={"model": "qwen3", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "hi"}]}).json()
    assert doc["choices"][0]["message"]["reasoning"] is None and "reasoning_content" not in doc["choices"][0]["message"]


def test_with_a_reasoning_parser_thinking_streams_in_delta_reasoning_then_the_answer(servers):
    url = sim(servers, "--reasoning-parser", "qwen3", "--reasoning-tokens", "10")
    chunks = events(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "ignore_eos": True,
                          "stream_options": {"include_usage": True}})
    kinds = ["reasoning" if "reasoning" in c["choices"][0]["delta"] else "content" for c in chunks[1:-1]]
    assert kinds == ["reasoning"] * 10 + ["content"] * 6  # thinking first, never mixed with the answer
    assert not any("reasoning_content" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == 16  # thinking is output: it counts against max_tokens
    cut = httpx.post(url + "/v1/chat/completions", json={"model": "qwen3", "max_tokens": 8, "ignore_eos": True,
                                                         "messages": [{"role": "user", "content": "hi"}]}).json()
    message = cut["choices"][0]["message"]
    assert message["content"] is None and len(message["reasoning"].split()) == 8  # all thinking, no answer


@pytest.mark.parametrize("where", ["server", "request"])
def test_enable_thinking_false_turns_the_thinking_off(servers, where):
    flags = ("--default-chat-template-kwargs", '{"enable_thinking": false}') if where == "server" else ()
    url = sim(servers, "--reasoning-parser", "qwen3", *flags)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "ignore_eos": True}
    if where == "request":
        body["chat_template_kwargs"] = {"enable_thinking": False}
    deltas = [c["choices"][0]["delta"] for c in events(url, body)[1:]]
    assert len(deltas) == 8 and all(set(d) == {"content"} for d in deltas)


def test_without_a_parser_a_thinking_model_writes_think_tags_into_content(servers):
    url = sim(servers, "--reasoning-tokens", "4")
    s = OpenAIServer(url).stream("qwen3", [{"role": "user", "content": "hi"}], max_tokens=10, extra={"ignore_eos": True})
    assert s.text.startswith("<think>\n") and "\n</think>\n\n" in s.text and s.reasoning_chunks == 0
    assert len(s.reasoning_text.split()) == 4 and len(s.answer.split()) == 6 and "<" not in s.answer
    assert s.first_answer_ms > s.ttft_ms


def test_think_splitter_holds_tags_split_across_chunks():
    splitter = ThinkSplitter()
    pieces = ["  <th", "ink>\nhmm", " ok</th", "ink>\n\nThe", " answer"]
    out = [splitter.feed(p) for p in pieces] + [splitter.flush()]
    assert "".join(t for t, _ in out) == "\nhmm ok" and "".join(a for _, a in out) == "The answer"
    assert out[3] == (" ok", "The")  # " ok" was held (it might have been "</think>"); the answer starts here
    plain = ThinkSplitter()
    assert [plain.feed("<b>bold"), plain.feed("</b>")] == [("", "<b>bold"), ("", "</b>")]


# ---- what counts reasoning as output --------------------------------------------------------------------
def test_readiness_counts_reasoning_as_output(servers):
    url = sim(servers, "--reasoning-parser", "qwen3")  # 24 tokens of thinking: the 8-token probe is all thinking
    s = OpenAIServer(url).stream("qwen3", [{"role": "user", "content": "Say hello."}], max_tokens=8,
                                 extra={"ignore_eos": True})
    assert s.content_chunks == 0 and s.reasoning_chunks == 8  # what a content-only probe would call silence
    ready = vllm_launch.wait_ready(settings_for(url), 20, lambda: None)
    assert ready.ok, f"{ready.failed_tier}: {ready.error}"
    assert ready.ttft_ms is not None


def test_integration_checks_pass_on_a_thinking_model_and_say_so(servers, tmp_path):
    from phases.integration import IntegrationChecks

    url = sim(servers, "--reasoning-parser", "qwen3")
    s = settings_for(url)
    s.model.real_weights = False
    outcome = IntegrationChecks(through_backend=False).check(Context(tmp_path, s, Ledger(tmp_path)))
    assert outcome.ok, outcome.message
    m = outcome.measurements
    assert m["stream_content_chunks"] == 0 and m["stream_reasoning_chunks"] == 16 and m["first_answer_ms"] is None
    assert "ChatOpenAI drops" in outcome.message and "model.reasoning: off" in outcome.message


@pytest.mark.parametrize("flags, ok", [((), False), (("--enable-auto-tool-choice", "--tool-call-parser", "hermes"), True)])
def test_a_backend_that_binds_tools_needs_vllms_tool_parser(servers, tmp_path, flags, ok):
    from phases.integration import IntegrationChecks

    (tmp_path / "backend").mkdir()
    (tmp_path / "backend" / "agent.py").write_text(BIND_TOOLS_CODE)
    url = sim(servers, *flags)
    s = settings_for(url)
    s.model.real_weights = False
    outcome = IntegrationChecks(through_backend=False).check(Context(tmp_path, s, Ledger(tmp_path)))
    m = outcome.measurements
    assert m["json_schema_status"] == 200 and m["tool_calling_because"] == "agent.py:5 .bind_tools()"
    assert (m["tool_call_status"], outcome.ok) == ((200, True) if ok else (400, False))
    if not ok:
        assert '"auto" tool choice requires --enable-auto-tool-choice' in outcome.message
        assert "vllm.tool_calling" in outcome.message


def test_phase2s_client_check_sees_the_thinking_chatopenai_drops(servers, tmp_path):
    pytest.importorskip("langchain_openai")
    from phases.phase2 import ClientContract

    s = settings_for(sim(servers, "--reasoning-parser", "qwen3"))
    s.backend.python = sys.executable
    outcome = ClientContract().check(Context(tmp_path, s, Ledger(tmp_path)))
    assert outcome.ok and outcome.warning, outcome.message  # output came, as reasoning: a warning, not a failure
    assert outcome.measurements["client"] == "langchain_openai" and outcome.measurements["chunks"] == 0
    assert outcome.measurements["reasoning_chunks"] == 8 and "max_tokens" in outcome.message
    plain = settings_for(sim(servers))
    plain.backend.python = sys.executable
    clean = ClientContract().check(Context(tmp_path, plain, Ledger(tmp_path)))
    assert clean.ok and not clean.warning and clean.measurements["chunks"] >= 1


def test_the_load_generator_times_the_first_output_and_the_first_answer_token_apart(servers):
    url = sim(servers, "--reasoning-parser", "qwen3", "--reasoning-tokens", "12")
    spec = loadgen.LoadSpec(requests=6, concurrency=2, output_tokens=20, warmup=0)
    summary = asyncio.run(loadgen.run_load(loadgen.Target(url, "openai", "qwen3"), spec))
    assert summary["completed"] == 6 and summary["thinking"] == {"requests": 6, "without_answer": 0}
    # 12 thinking tokens at ≥ 0.5 ms each lie between the first output and the answer's first token
    assert summary["ttfa_ms"]["median"] - summary["ttft_ms"]["median"] >= 12 * 0.5
    assert summary["metrics"]["ttfa_p99_ms"] == summary["ttfa_ms"]["p99"]
    short = asyncio.run(loadgen.run_load(loadgen.Target(url, "openai", "qwen3"),
                                         loadgen.LoadSpec(requests=2, concurrency=1, output_tokens=8, warmup=0)))
    assert short["thinking"]["without_answer"] == 2 and short["ttfa_ms"]["median"] is None
    assert short["ttft_ms"]["median"] is not None  # output came: the request is not an error
    raw = sim(servers, "--reasoning-tokens", "12")  # no parser: <think> in content, as on Ollama
    summary = asyncio.run(loadgen.run_load(loadgen.Target(raw, "openai", "qwen3"), spec))
    assert summary["thinking"]["requests"] == 6
    assert summary["ttfa_ms"]["median"] - summary["ttft_ms"]["median"] >= 11 * 0.5
    plain = asyncio.run(loadgen.run_load(loadgen.Target(sim(servers), "openai", "qwen3"), spec))
    assert plain["thinking"]["requests"] == 0 and plain["ttfa_ms"]["median"] - plain["ttft_ms"]["median"] < 1


# ---- through the backends --------------------------------------------------------------------------------
SAMPLE_BACKEND = Path(__file__).resolve().parent.parent / "migrator" / "app" / "sample_project" / "backend"


def reference_answer(url: str, max_tokens: int, tmp_path: Path) -> tuple[list[str], str]:
    """The reference backend's own LLM (src/core/llm.py: ChatOpenAI on LLM_BACKEND=vllm) streaming a question the
    way its /chat does (chunk.content only), in a fresh interpreter with the real langchain-openai."""
    import subprocess

    script = ("import json, sys\nsys.path.insert(0, sys.argv[1])\nfrom src.core.config import Settings\n"
              "from src.core.llm import get_llm\n"
              "llm = get_llm(Settings(llm_backend='vllm', vllm_base_url=sys.argv[2], vllm_model='qwen3', "
              "max_tokens=int(sys.argv[3])))\n"
              "print(json.dumps([c.content for c in llm.stream([('human', 'What links the entities?')])]))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(SAMPLE_BACKEND), url + "/v1", str(max_tokens)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chunks = json.loads(proc.stdout.strip().splitlines()[-1])
    return chunks, "".join(chunks)


def test_the_reference_backend_drops_delta_reasoning_and_gets_an_empty_answer(servers, tmp_path):
    pytest.importorskip("langchain_openai")
    pytest.importorskip("pydantic_settings")
    parse = sim(servers, "--reasoning-parser", "qwen3", "--reasoning-tokens", "24")
    _, answer = reference_answer(parse, 16, tmp_path)
    assert answer == ""  # 16 tokens of thinking, all in delta.reasoning: ChatOpenAI shows nothing
    _, longer = reference_answer(parse, 40, tmp_path)
    assert longer and "<think>" not in longer  # past the thinking the answer comes, without it
    off = sim(servers, "--reasoning-parser", "qwen3", "--default-chat-template-kwargs", '{"enable_thinking": false}')
    _, answer = reference_answer(off, 16, tmp_path)
    assert answer  # model.reasoning: off — the same 16 tokens are all answer
    raw = sim(servers, "--reasoning-tokens", "4")
    _, answer = reference_answer(raw, 16, tmp_path)
    assert answer.startswith("<think>\n") and "</think>" in answer  # model.reasoning: raw: as on Ollama


def test_the_sandbox_backend_answers_with_content_only(servers, tmp_path):
    url = sim(servers, "--reasoning-parser", "qwen3")
    env = tmp_path / ".env"
    env.write_text(f"LLM_BACKEND=vllm\nVLLM_BASE_URL={url}/v1\nVLLM_MODEL=qwen3\n")
    port = servers.start("migrator.sim.backend", "--env-file", str(env))
    reply = httpx.post(f"http://127.0.0.1:{port}/chat", json={"message": "hi"}, timeout=30)
    assert reply.status_code == 200 and reply.json() == {"llm_backend": "vllm", "answer": ""}  # 16 tokens of thinking


def backend_chat(servers, tmp_path, vllm_url: str, max_tokens: int) -> tuple[str, str]:
    """The sandbox backend on vLLM: its streamed /chat (the reference backend's shape: plain text chunks) and
    its unstreamed one (16 tokens), each as the user gets it."""
    env = tmp_path / f"{vllm_url.rsplit(':', 1)[1]}.env"
    env.write_text(f"LLM_BACKEND=vllm\nVLLM_BASE_URL={vllm_url}/v1\nVLLM_MODEL=qwen3\n")
    url = f"http://127.0.0.1:{servers.start('migrator.sim.backend', '--env-file', str(env))}"
    streamed = httpx.post(url + "/chat", json={"message": "hi", "stream": True, "max_tokens": max_tokens}, timeout=30)
    plain = httpx.post(url + "/chat", json={"message": "hi"}, timeout=30)
    assert streamed.status_code == plain.status_code == 200 and plain.json()["llm_backend"] == "vllm"
    return streamed.text.removesuffix("\n[done]\n"), plain.json()["answer"]


@pytest.mark.parametrize("reasoning", ["off", "parse", "raw"])
def test_each_reasoning_mode_through_the_backends_chat_path(servers, tmp_path, reasoning):
    """Issue #15 §3 through the backend: vLLM (the simulator, thinking 24 tokens a question) started with the
    flags vllm_args renders for a Qwen3 model in each mode, and what the backend's /chat — streamed and not —
    hands the user. parse: the thinking in delta.reasoning is dropped, so a max_tokens within the thinking
    answers nothing, a larger one the answer without tags; off: no thinking, all answer; raw: <think> in it."""
    s = Settings()
    s.model.id, s.model.reasoning = "Qwen/Qwen3-32B", reasoning
    flags = vllm_launch.reasoning_args(s)
    url = sim(servers, *flags, "--reasoning-tokens", "24")
    short, plain = backend_chat(servers, tmp_path, url, 16)
    long, _ = backend_chat(servers, tmp_path, url, 40)
    if reasoning == "parse":
        assert flags == ["--reasoning-parser", "qwen3"]
        assert short == "" and plain == ""  # 16 tokens, all thinking: the user gets an empty answer
        assert long and "<think>" not in long and "</think>" not in long
    elif reasoning == "off":
        assert flags == ["--default-chat-template-kwargs", '{"enable_thinking": false}']
        assert short and plain and "<think>" not in short + plain + long
    else:
        assert flags == []
        assert short.startswith("<think>\n") and plain.startswith("<think>\n") and "</think>" not in short
        assert "\n</think>\n\n" in long  # as on Ollama today: the tags in the answer


# ---- Ollama's context -----------------------------------------------------------------------------------
@pytest.mark.parametrize("loaded, max_model_len, warned", [
    (True, 8192, True), (True, 40960, False), (False, 8192, True), (False, 65536, False)])
def test_phase1_warns_when_ollamas_context_is_larger_than_max_model_len(servers, tmp_path, loaded, max_model_len,
                                                                          warned):
    from phases.context import OllamaContext

    flags = ("--context-length", "32768") + (("--preload",) if loaded else ())
    port = servers.start("migrator.sim.ollama", *flags)
    s = Settings()
    s.ollama.url, s.vllm.max_model_len = f"http://127.0.0.1:{port}", max_model_len
    outcome = OllamaContext().check(Context(tmp_path, s, Ledger(tmp_path)))
    expected = 32768 if loaded else 40960  # loaded: what /api/ps says it runs with; else the model's own maximum
    assert outcome.ok and outcome.warning is warned and outcome.measurements["ollama_context_length"] == expected
    if warned:
        assert f"vllm.max_model_len is {max_model_len}" in outcome.message and "HTTP 400" in outcome.message


def test_the_context_check_runs_in_phase1_and_tolerates_a_silent_ollama(tmp_path):
    from phases.context import OllamaContext
    from phases.phase1 import build

    assert "phase1.ollama-context" in [step.id for step in build(Settings(), {}).steps]
    s = Settings()
    s.ollama.url = "http://127.0.0.1:9"  # nothing listens: phase1's Ollama step already warns about that
    outcome = OllamaContext().check(Context(tmp_path, s, Ledger(tmp_path)))
    assert outcome.ok and not outcome.warning and "not compared" in outcome.message


def test_phase1_starts_a_thinking_model_with_its_parser_and_readiness_passes(sandbox):
    """A local Qwen3-shaped model (its template reads enable_thinking) under model.reasoning: parse: phase1
    starts the simulator with --reasoning-parser qwen3 and the readiness stream, all thinking, passes."""
    model = sandbox / "models" / "Qwen3-32B"
    shutil.copytree(sandbox / "models" / "Qwen2.5-32B-Instruct", model)
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN3_TEMPLATE}))
    result = run_cli("--project", str(sandbox), "--json", "--set", "model.id=models/Qwen3-32B",
                     "--set", "model.reasoning=parse", "phase1", "--no-bench")
    assert result.exit_code == 0, result.stderr
    start = next(s for s in json.loads(result.stdout)["steps"] if s["id"] == "phase1.start-vllm")
    assert start["status"] == "passed" and start["measurements"]["ttft_ms"] > 0
    command = json.loads((sandbox / ".graphrag-migrate" / "vllm.pid").read_text())["command"]
    at = command.index("--reasoning-parser")
    assert command[at + 1] == "qwen3" and "--default-chat-template-kwargs" not in command
    probe = OpenAIServer(Settings().vllm.url.replace("8001", str(_port(command)))).stream(
        "qwen2.5-32b-instruct", [{"role": "user", "content": "hi"}], max_tokens=8, extra={"ignore_eos": True})
    assert probe.reasoning_chunks == 8 and probe.content_chunks == 0  # the probe phase1 passed was all thinking
    assert run_cli("--project", str(sandbox), "rollback").exit_code == 0


def _port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


def test_the_capacity_report_shows_ttfa_when_answers_began_with_thinking():
    from migrator.bench.capacity import Slo, judge
    from migrator.bench.loadgen import RequestResult
    from migrator.bench.report import render_html

    ms = 1_000_000

    def thinking(first_answer_ms: float | None) -> RequestResult:
        chunks = [int((50 + 10 * i) * ms) for i in range(20)]
        return RequestResult(ok=True, start_ns=0, end_ns=chunks[-1], first_token_ns=chunks[0], chunk_ns=chunks,
                             output_tokens=20, prompt_tokens=10, reasoning_chunks=12,
                             first_answer_ns=None if first_answer_ms is None else int(first_answer_ms * ms))

    probe = judge([thinking(170.0)] * 9 + [thinking(None)], 1.0, 2, Slo())
    assert probe["thinking"] == {"requests": 10, "without_answer": 1} and probe["ttfa_ms"]["p99"] == 170.0
    run = {"probes": [probe], "target": {"url": "http://127.0.0.1:8001", "model": "qwen3"},
           "capacity": {"realtime": {"users": 2, "ci": [2, None]}, "wait": {"users": 2}}}
    slo = {"ttft_ms": 500, "tokens_per_s": 30, "e2e_s": 30, "fraction": 0.95}
    page = render_html({"vllm": run}, None, slo)
    assert "TTFA p99 ms" in page and "<td>170" in page
    plain = dict(probe, thinking={"requests": 0, "without_answer": 0})
    assert "TTFA" not in render_html({"vllm": dict(run, probes=[plain])}, None, slo)


def test_init_records_the_backends_tool_calls_and_qwen3s_thinking(cli, tmp_path):
    root = tmp_path / "envlist-getenv"
    shutil.copytree(Path(__file__).resolve().parent / "projects" / "envlist-getenv", root)
    result = cli("--project", root, "init", "--json", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["discovered"]["tool_calls"] == []
    (root / "backend" / "app" / "agent.py").write_text(BIND_TOOLS_CODE)
    doc = json.loads(cli("--project", root, "init", "--json", "--dry-run").stdout)["discovered"]
    assert doc["tool_calls"] == ["backend/app/agent.py:5 .bind_tools()"]
    notes = " ".join(doc["notes"])
    assert "backend/app/agent.py:5 .bind_tools()" in notes and "--tool-call-parser hermes" in notes
    assert "thinks by default" not in notes  # llama3.1:8b
    env = root / ".env"
    env.write_text(env.read_text().replace("LLM_MODEL=llama3.1:8b", "LLM_MODEL=qwen3:32b"))
    doc = json.loads(cli("--project", root, "init", "--json", "--dry-run").stdout)["discovered"]
    assert "Ollama's qwen3:32b thinks by default" in " ".join(doc["notes"])
