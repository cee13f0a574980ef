from pathlib import Path

import pytest

from migrator.core.config import load_settings, parse_set_options
from migrator.core.errors import ConfigError, ExitCode


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "migrate.yaml"
    path.write_text(text)
    return path


def test_missing_file_means_plan_defaults(tmp_path):
    s = load_settings(tmp_path / "migrate.yaml", environ={})
    assert s.model.id == "Qwen/Qwen2.5-32B-Instruct"
    assert s.vllm.port == 8001 and s.vllm.gpu_memory_utilization == 0.9 and s.vllm.max_model_len == 8192
    assert s.vllm.image.startswith("vllm/vllm-openai:v")
    assert not s.vllm.enable_chunked_prefill  # vLLM's V1 default already: not passed unless asked
    assert s.project.compose_file == "docker/docker-compose.yml" and s.project.env_file == "docker/.env"
    assert s.ollama.url == "http://localhost:11434"
    assert s.vllm.container_name == "graphrag-vllm" and s.project.network == "" and s.project.llm_services == []
    gates = [(g.metric, g.op, g.threshold, g.source, g.observe_only) for g in s.gates]
    assert gates == [("per_user_output_tokens_per_s", ">", 30.0, "bench", False),
                     ("ttft_p99_ms", "<", 500.0, "bench", False),
                     ("realtime_users", ">", 10.0, "bench", False),  # from `bench --sweep`; a note until one ran
                     ("gpu_utilization_pct", "<", 90.0, "bench", False),  # nvidia-smi; a note until read
                     ("ttft_p99_ms", "<", 500.0, "metrics", False),
                     ("error_rate", "<", 0.05, "metrics", False)]


def test_precedence_file_then_environment_then_command_line(tmp_path):
    path = write(tmp_path, "vllm:\n  port: 9000\n  max_model_len: 4096\n")
    s = load_settings(path, environ={"GRAPHRAG_MIGRATE_VLLM__PORT": "9100"},
                      overrides={"vllm.max_model_len": "2048"})
    assert s.vllm.port == 9100 and s.vllm.max_model_len == 2048
    assert load_settings(path, environ={}).vllm.port == 9000


@pytest.mark.parametrize("text, fragment", [
    ("vllm:\n  gpu_memory_utilization: 1.5\n", "vllm.gpu_memory_utilization = 1.5"),
    ("vllm:\n  port: eighty\n", "vllm.port = 'eighty'"),
    ("vllm:\n  runtime: podman\n", "one of docker, process"),
    ("vllm:\n  image: 'Vllm Openai'\n", "vllm.image"),
    ("ollama:\n  url: localhost:11434\n", "an http(s) URL"),
    ("gates:\n  - metric: x\n    op: '=='\n    threshold: 1\n", "gates[0].op"),
    # A gate whose metric is never measured would never block: refused when migrate.yaml is read.
    ("gates:\n  - {metric: ttft_p99, op: '<', threshold: 500}\n",
     "a load test records no 'ttft_p99' (did you mean ttft_p99_ms?)"),
    ("gates:\n  - {metric: error_rte, op: '<', threshold: 0.05, source: metrics}\n",
     "'error_rte' is not one of ttft_p99_ms, itl_p99_ms, e2e_p99_ms, error_rate, requests_in_window "
     "(did you mean error_rate?)"),
    ("gates:\n  - {metric: 'histogram_quantile(1.5, vllm:e2e_request_latency_seconds)', op: '<', threshold: 1,"
     " source: metrics}\n", "histogram_quantile's quantile 1.5 is not between 0 and 1"),
    ("gates:\n  - {metric: 'stddev(vllm:num_requests_waiting)', op: '<', threshold: 1, source: metrics}\n",
     "unknown function stddev()"),
])
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert fragment in err.value.one_line()
    assert err.value.exit_code == ExitCode.USAGE


def test_metrics_gates_take_promql_style_queries(tmp_path):
    text = ("gates:\n  - {name: p99 e2e, metric: 'histogram_quantile(0.99, rate(vllm:e2e_request_latency_seconds_bucket[5m]))',"
            " op: '<', threshold: 30, source: metrics}\n"
            "  - {name: queue, metric: 'max(vllm:num_requests_waiting)', op: '<', threshold: 20, source: metrics}\n")
    gates = load_settings(write(tmp_path, text), environ={}).gates
    assert [g.name for g in gates] == ["p99 e2e", "queue"] and all(g.source == "metrics" for g in gates)


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "vllm:\n  gpu_memory_utilisation: 0.5\n"), environ={})
    assert "unknown key 'gpu_memory_utilisation'" in err.value.message
    assert "gpu_memory_utilization" in err.value.fix


def test_unknown_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'vlm'"):
        load_settings(write(tmp_path, "vlm: {}\n"), environ={})
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d"):
        load_settings(write(tmp_path, "vllm:\n  port: [\n"), environ={})


def test_environment_variable_errors_name_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="GRAPHRAG_MIGRATE_VLLM__PORT"):
        load_settings(None, environ={"GRAPHRAG_MIGRATE_VLLM__PORT": "99999"})


def test_set_options_parse_and_reject_malformed():
    assert parse_set_options(["vllm.port=1", "model.id=a/b"]) == {"vllm.port": "1", "model.id": "a/b"}
    with pytest.raises(ConfigError):
        parse_set_options(["port=1"])


def test_explicit_config_path_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={}, required=True)


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    with pytest.raises(ConfigError, match="key 'vllm' appears twice"):
        load_settings(write(tmp_path, "vllm:\n  port: 1\nvllm:\n  port: 2\n"), environ={})


ALIAS_BOMB = """\
vllm:
  extra_args: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: [*g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


@pytest.mark.parametrize("text, line", [
    (ALIAS_BOMB, 2),
    ("vllm: &v\n  port: 9000\nmodel:\n  <<: *v\n", 1),
    ("vllm:\n  port: 9000\n  max_model_len: &n 4096\n  tensor_parallel_size: *n\n", 3),
], ids=["alias-bomb", "merge-key", "anchor-and-alias"])
def test_yaml_aliases_are_refused(tmp_path, text, line):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert f"migrate.yaml line {line}: YAML aliases are not allowed" in err.value.message
    assert err.value.exit_code == ExitCode.USAGE and err.value.fix


def test_a_long_value_is_never_echoed_whole(tmp_path):
    long = "x" * 5000
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"vllm:\n  port: '{long}'\n"), environ={})
    line = err.value.one_line()
    assert "vllm.port" in line and "…" in line and len(line) < 300 and "\n" not in line
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"vllm:\n  {long}: 1\n"), environ={})
    assert len(err.value.one_line()) < 600
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "vllm:\n  port: |\n    one\n    two\n    three\n"), environ={})
    assert "\n" not in err.value.one_line()


@pytest.mark.parametrize("value", ["hf_" + "Qz8Xw7Vu6Ts5Rq4Po3Nm2Lk1", "sk-proj-" + "aB3dE5gH7jK9mN1pQ3sT5vW7",
                                   "dGhpcyBpcyBhIHNlY3JldCBrZXkgdmFsdWU="], ids=["hf", "sk", "base64"])
def test_a_key_given_for_api_key_env_is_refused_and_never_echoed(tmp_path, value):
    for source in ({"config": f"vllm:\n  api_key_env: '{value}'\n"}, {"set": value}):
        with pytest.raises(ConfigError) as err:
            if "config" in source:
                load_settings(write(tmp_path, source["config"]), environ={})
            else:
                load_settings(None, environ={}, overrides={"vllm.api_key_env": value})
        text = err.value.one_line()
        assert value not in text and value[:12] not in text
        assert "that looks like a key itself; give the NAME of the variable that holds it" in text
    assert load_settings(None, environ={}, overrides={"vllm.api_key_env": "VLLM_API_KEY"}).vllm.api_key_env


@pytest.mark.parametrize("extra_args", [
    "vllm:\n  extra_args: ['--api-key', 'sk-live-0123456789abcdef']\n",
    "vllm:\n  extra_args: ['--api-key=sk-live-0123456789abcdef']\n",
    "vllm:\n  extra_args: '--enforce-eager --api-key sk-live-0123456789abcdef'\n",
    "vllm:\n  extra_args: ['--api_key', 'sk-live-0123456789abcdef']\n",
    "vllm:\n  extra_args: ['--api-k=sk-live-0123456789abcdef']\n",  # argparse takes the prefix for --api-key
    "vllm:\n  extra_args: ['--api-ke', 'sk-live-0123456789abcdef']\n",
], ids=["list", "equals", "string", "underscore", "prefix-equals", "prefix"])
def test_an_api_key_on_vllms_command_line_is_refused_at_load(tmp_path, extra_args):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, extra_args), environ={})
    text = err.value.one_line()
    assert "--api-key" in text and "vllm.api_key_env" in err.value.fix
    assert "sk-live-0123456789abcdef" not in text and "0123456789" not in text
    with pytest.raises(ConfigError):
        load_settings(None, environ={"GRAPHRAG_MIGRATE_VLLM__EXTRA_ARGS": "--api-key=abc123456789"})
