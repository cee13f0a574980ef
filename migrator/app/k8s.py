"""`render k8s`: the vLLM deployment of the first box as Kubernetes manifests, for the cluster past it.

Built from what phase3's compose file is built from — `vllm_args` (model, served name, max_model_len, memory
settings, reasoning and tool flags), the pinned image and its entrypoint prefix, the revision phase1 pinned —
and phase4's alert rules, so nothing is retyped. Secrets go in only by `secretKeyRef`: no secret value is
read here at all. The output directory is the operator's: a file in it that this command did not write, or
one it wrote and the operator edited since, is never replaced (a marker file records what it wrote).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from migrator.adapters import vllm as vllm_launch
from migrator.adapters.hf import ALLOW_PATTERNS
from migrator.adapters.runtime.docker import command_prefix
from migrator.core.config import host_path
from migrator.core.engine import Context
from migrator.core.errors import CheckFailed, ConfigError, from_os_error
from migrator.core.secrets import redact

TARGETS = ("manifests",)  # what --target may name (the production-stack values file is not built yet)
K8S_VERSION = "1.33.0"    # the Kubernetes version the built-in kinds are checked against (kubernetes-validate)
MARKER = ".graphrag-migrate-k8s.json"
HF_HOME = "/root/.cache/huggingface"
PORT = vllm_launch.CONTAINER_PORT
STARTUP_PERIOD_S = 10
JOB_LABEL = "app.kubernetes.io/name"  # its value, "vllm", becomes the job label: phase4's rules say job="vllm"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$")  # atomic_write_bytes' temp file (mkstemp's 8 characters)
_INT32_MAX = 2**31 - 1  # spec.replicas; kubernetes-validate's schema does not check the bound, the API server does
# vLLM flags that would carry a secret on the command line (and so into the manifests), each with the
# shortest prefix argparse (vLLM sets no allow_abbrev=False) takes for it unambiguously
_SECRET_FLAGS = {"--hf-token": "--hf-t", "--api-key": "--api-k"}
# The init container's download: the files phase1 downloads (hf.ALLOW_PATTERNS), at the pinned revision, into
# HF_HOME on the volume; a snapshot already there is only checked against the Hub's file list.
FETCH_SCRIPT = ("import json, sys\n"
                "from huggingface_hub import snapshot_download\n"
                "print(snapshot_download(sys.argv[1], revision=sys.argv[2], allow_patterns=json.loads(sys.argv[3])))")


@dataclass
class K8sOptions:
    out: Path
    namespace: str = "graphrag"
    replicas: int = 1
    gpus_per_replica: int | None = None  # None: vllm.tensor_parallel_size
    target: str = "manifests"
    cache_size: str = "200Gi"


@dataclass
class RenderedFile:
    path: str            # relative to the output directory
    kind: str
    check: str           # schema: a built-in kind; crd: the Prometheus operator's; kustomize; text

    def describe(self, validated: bool) -> str:
        if self.check == "schema":
            return (f"{self.kind} — schema-checked (Kubernetes {K8S_VERSION}, strict)" if validated else
                    f"{self.kind} — not schema-checked here (pip install kubernetes-validate)")
        if self.check == "crd":
            return f"{self.kind} (CRD) — not schema-checked"
        return self.kind


@dataclass
class K8sResult:
    out: Path
    namespace: str
    files: list[RenderedFile]
    validated: bool                      # the built-in kinds passed kubernetes-validate here
    secrets: list[dict]                  # the Secrets the pod expects: names and keys, never values
    # (shown as "refs": a key named like a secret would have its value masked in --json)
    warnings: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # files of an earlier render no longer written
    next_steps: list[str] = field(default_factory=list)
    ok: bool = True

    def to_dict(self) -> dict:
        return {"ok": self.ok, "out": str(self.out), "namespace": self.namespace,
                "kubernetes_version": K8S_VERSION, "validated": self.validated,
                "files": [{"path": f.path, "kind": f.kind, "schema_checked": f.check == "schema" and self.validated,
                           "crd": f.check == "crd"} for f in self.files],
                "refs": self.secrets, "warnings": self.warnings, "removed": self.removed,
                "next_steps": self.next_steps}


def k8s_name(service_name: str) -> str:
    """vllm.service_name as a Kubernetes object name (DNS-1035 label: lower case, digits and '-')."""
    name = re.sub(r"[_.]+", "-", service_name.lower()).strip("-")
    if not _DNS_LABEL.match(name):
        raise ConfigError(f"vllm.service_name {service_name!r} is not usable as a Kubernetes name",
                          "set vllm.service_name to lower-case letters, digits and '-' (starting with a letter)")
    return name


def _validate_options(options: K8sOptions) -> None:
    if options.target not in TARGETS:
        raise ConfigError(f"unknown --target {options.target!r}", f"one of: {', '.join(TARGETS)}")
    if options.replicas < 1:
        raise ConfigError(f"--replicas {options.replicas}: at least 1", "pass --replicas 1 or more")
    if options.replicas > _INT32_MAX:
        raise ConfigError(f"--replicas {options.replicas}: more than Kubernetes' spec.replicas holds "
                          f"({_INT32_MAX}, an int32)", "pass the number of vLLM pods the cluster should run")
    if options.gpus_per_replica is not None and not 1 <= options.gpus_per_replica <= 64:
        raise ConfigError(f"--gpus-per-replica {options.gpus_per_replica}: between 1 and 64",
                          "pass the GPUs one vLLM pod spans (tensor parallelism)")
    if not _DNS_LABEL.match(options.namespace):
        raise ConfigError(f"--namespace {options.namespace!r} is not a Kubernetes namespace name",
                          "lower-case letters, digits and '-', starting with a letter, at most 63")
    quantity = _QUANTITY.match(options.cache_size)
    if not quantity:
        raise ConfigError(f"--cache-size {options.cache_size!r} is not a Kubernetes quantity", "e.g. 200Gi")
    if float(quantity.group(1)) == 0:  # the API server refuses a claim of nothing
        raise ConfigError(f"--cache-size {options.cache_size!r}: a volume claim must be more than zero",
                          "e.g. 200Gi (the model's weights, plus vLLM's compile cache)")


def pinned_image(image: str) -> str:
    """The image as the pod gets it: a tag other than `latest`, or a digest; else a ConfigError."""
    if "@sha256:" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if not tag or tag == "latest":
        raise ConfigError(f"vllm.image {image!r} is not pinned", "set vllm.image to a release tag "
                          "(e.g. vllm/vllm-openai:v0.32.0) or a digest: a cluster pulls whatever `latest` is today")
    return image


def _flag_name(arg: str) -> str:
    """A long option's name as vLLM reads it: before any '=', its underscores as dashes (`--hf_token`)."""
    name = arg.partition("=")[0]
    return name.replace("_", "-") if name.startswith("--") else name


def _names(arg: str, flags: dict[str, str]) -> str | None:
    """The flag of `flags` that `arg` is to vLLM — spelled out, with underscores, or a prefix argparse
    expands to it — else None."""
    name = _flag_name(arg)
    return next((full for full, shortest in flags.items() if name.startswith(shortest) and full.startswith(name)),
                None)


def _host_in(extra_args) -> str | None:
    """The address `--host` (any spelling vLLM reads) in extra_args gives, else None."""
    args = [str(arg) for arg in extra_args]
    found = None
    for i, arg in enumerate(args):
        if _names(arg, {"--host": "--host"}):
            found = arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
    return found


def _check_extra_args(settings, gpus: int) -> None:
    args = [str(arg) for arg in settings.vllm.extra_args]
    for arg in args:
        secret_flag = _names(arg, _SECRET_FLAGS)
        if secret_flag:
            raise ConfigError(f"vllm.extra_args has {secret_flag}: a secret would be written into the "
                              "manifests", "remove it; the pod gets HF_TOKEN and VLLM_API_KEY from Secrets")
    for arg in args:
        if redact(arg) != arg:  # an hf_…/sk-… token, or a secret value this run knows
            raise ConfigError("vllm.extra_args has a value that looks like a secret",
                              "remove it; the pod takes secrets only from Kubernetes Secrets")
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag == "-tp" or _names(arg, {"--tensor-parallel-size": "--tensor-p"}):
            value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            if value != str(gpus):
                raise ConfigError(f"vllm.extra_args has --tensor-parallel-size {value} but each pod gets {gpus} "
                                  "GPU(s)", "remove it from vllm.extra_args: --gpus-per-replica sets it")


def model_config(ctx: Context, commit: str | None) -> tuple[dict | None, str]:
    """The model's config.json (a local model directory's, else the snapshot in this box's HF cache), and
    where it came from; (None, why) when it is not on this box. Never asks the Hub: this rendering is offline."""
    settings = ctx.settings
    if vllm_launch.is_local_model(settings, ctx.project):
        folder = Path(vllm_launch.model_arg(settings, ctx.project))
    else:
        from migrator.adapters import hf

        recorded = ctx.resources.get("model") or {}
        cache = recorded.get("cache_dir") or os.path.join(host_path(settings.vllm.hf_cache, ctx.project), "hub")
        folder = hf.local_snapshot(settings.model.id, commit or settings.model.revision, cache)
        if folder is None:
            return None, f"{settings.model.id}@{commit or settings.model.revision} is not in {cache}"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{folder / 'config.json'} cannot be read ({type(exc).__name__})"
    return (config if isinstance(config, dict) else None), str(folder / "config.json")


def check_tensor_parallel(config: dict, source: str, gpus: int) -> str | None:
    """vLLM splits the attention heads over the GPUs of one pod: they must divide evenly (and the KV heads
    divide, or be replicated a whole number of times), else vLLM refuses to start in the pod. A config that
    names no head count: the warning that says so (None when checked)."""
    text = config.get("text_config", config)
    text = text if isinstance(text, dict) else config
    heads = text.get("num_attention_heads")
    kv = text.get("num_key_value_heads") or heads
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        return (f"{source} names no num_attention_heads: --gpus-per-replica {gpus} is not checked against the "
                "model's heads")
    if heads % gpus:
        raise ConfigError(f"--gpus-per-replica {gpus} does not divide the model's {heads} attention heads ({source})",
                          "pick a GPU count that divides it (tensor parallelism splits the heads evenly)")
    if isinstance(kv, int) and kv >= 1 and (kv % gpus if kv >= gpus else gpus % kv):
        raise ConfigError(f"--gpus-per-replica {gpus} does not fit the model's {kv} KV heads ({source})",
                          "pick a GPU count that divides the KV heads, or a multiple of them")
    return None


def _model(ctx: Context, warnings: list[str]) -> tuple[str, str | None, list[str], str | None, str | None]:
    """(--model in the pod, the local model directory on this box, --revision args, the commit, the PVC
    directory a local model must be copied to)."""
    settings = ctx.settings
    if vllm_launch.is_local_model(settings, ctx.project):
        local = vllm_launch.model_arg(settings, ctx.project)
        sub = "models/" + re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(local).name)
        warnings.append(f"model.id is a directory on this box ({local}): copy it to the cache volume's {sub}/ "
                        "before the pod starts (it is mounted read-only at /model)")
        return "/model", local, [], None, sub
    recorded = ctx.resources.get("model") or {}
    commit = recorded.get("commit") if recorded.get("repo") == settings.model.id else None
    revision = commit or settings.model.revision
    if not _COMMIT.match(revision):
        warnings.append(f"model.revision is {revision!r}, not a commit: the cluster downloads what it points to "
                        "then — run phase1 (it pins the commit) or set model.revision to a commit hash")
    return settings.model.id, None, ["--revision", revision], commit, None


def _secrets(settings, name: str, namespace: str) -> list[dict]:
    def entry(secret: str, env: str, source: str, optional: bool, why: str) -> dict:
        return {"name": secret, "field": "value", "env": env, "optional": optional, "why": why,
                "create": f'printf %s "${source}" | kubectl -n {namespace} create secret generic {secret} '
                          "--from-file=value=/dev/stdin"}

    out = [entry(f"{name}-hf-token", "HF_TOKEN", "HF_TOKEN", True,
                 "Hugging Face token for a gated model's download (optional: a public model needs none)")]
    if settings.vllm.api_key_env:
        out.append(entry(f"{name}-api-key", "VLLM_API_KEY", settings.vllm.api_key_env, False,
                         f"vLLM's API key (vllm.api_key_env: {settings.vllm.api_key_env}); /v1 refuses requests "
                         "without it"))
    return out


def plan(ctx: Context, options: K8sOptions) -> tuple[dict[str, bytes], list[RenderedFile], list[dict], list[str],
                                                     list[str]]:
    """Every file of the rendering (relative path → bytes), what each is, the Secrets the pod expects, the
    warnings and the next steps. Writes nothing."""
    from migrator.files.templates import render
    from phases.phase4 import monitoring_files

    _validate_options(options)
    settings = ctx.settings
    v = settings.vllm
    gpus = options.gpus_per_replica or v.tensor_parallel_size
    image = pinned_image(v.image)
    name = k8s_name(v.service_name)
    namespace = options.namespace
    _check_extra_args(settings, gpus)
    warnings: list[str] = []
    if v.device != "gpu":
        warnings.append("vllm.device is cpu on this box: the pod requests nvidia.com/gpu all the same — "
                        f"{image} must be a CUDA build")
    model, model_dir, revision, commit, local_sub = _model(ctx, warnings)
    if gpus > 1:  # one GPU holds every head
        config, source = model_config(ctx, commit)
        if config is None:
            warnings.append(f"the model's attention heads are unknown ({source}): --gpus-per-replica {gpus} is "
                            "not checked against them — run phase1 (it downloads config.json) to have it checked")
        else:
            unknown = check_tensor_parallel(config, source, gpus)
            if unknown:
                warnings.append(unknown)

    pod_settings = dataclasses.replace(settings, vllm=dataclasses.replace(v, tensor_parallel_size=gpus))
    args = [*command_prefix(ctx, pod_settings),
            *vllm_launch.vllm_args(pod_settings, model, model_dir, ctx.project, limits=None),
            *revision, "--port", str(PORT)]
    host = _host_in(v.extra_args)
    if host is not None and host not in ("0.0.0.0", "::"):  # kubelet's probes and the Service come in on the pod's IP, never its loopback
        args += ["--host", "0.0.0.0"]
        warnings.append(f"vllm.extra_args has --host {host}, this box's: the pod listens on 0.0.0.0 instead "
                        "(kubelet's probes and the Service reach it on the pod's IP; it stays inside the cluster)")
    # The model is on the volume before vLLM starts — a local one copied there, a Hub one fetched by the init
    # container (outside the startup probe's budget) — so vLLM runs offline, as phase3's compose file runs it.
    environment = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HOME": HF_HOME, "HF_HUB_OFFLINE": "1"}
    fetch = None if local_sub else ["python3", "-c", FETCH_SCRIPT, model, revision[1], json.dumps(ALLOW_PATTERNS)]
    secrets = _secrets(settings, name, namespace)
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name,
              "app.kubernetes.io/component": "llm", "app.kubernetes.io/managed-by": "graphrag-migrate"}
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}
    common = {"app_name": name, "namespace": namespace, "labels": labels, "selector": selector,
              "out_name": options.out.name, "port": PORT, "replicas": options.replicas}
    pvc_name = f"{name}-cache"
    # /v1 answers 401 without the API key, which a probe cannot send from a Secret: /health then.
    readiness = "/health" if v.api_key_env else "/v1/models"

    alerts = next(data for path, data in monitoring_files(ctx).items() if path.name == "vllm-alerts.yml").decode()
    groups = "\n".join("  " + line if line else line for line in alerts.splitlines()
                       if not line.startswith("#"))

    files = {
        "vllm-deployment.yaml": render(
            "k8s/vllm-deployment.yaml.j2", **common, image=image, args=args, environment=environment,
            secrets=secrets, gpus=gpus, fetch=fetch, startup_timeout_s=f"{v.startup_timeout_s:g}",
            startup_period_s=STARTUP_PERIOD_S,
            startup_failures=max(1, math.ceil(v.startup_timeout_s / STARTUP_PERIOD_S)),
            readiness_path=readiness, hf_home=HF_HOME, local_model=local_sub, pvc_name=pvc_name,
            stop_grace_s=int(math.ceil(settings.deploy.stop_grace_s))),
        "vllm-service.yaml": render("k8s/vllm-service.yaml.j2", **common, forward_port=v.port),
        "vllm-pvc.yaml": render("k8s/vllm-pvc.yaml.j2", **common, pvc_name=pvc_name, cache_size=options.cache_size,
                                access_mode="ReadWriteOnce" if options.replicas == 1 else "ReadWriteMany"),
        "monitoring/vllm-servicemonitor.yaml": render("k8s/monitoring/vllm-servicemonitor.yaml.j2", **common,
                                                      job_label=JOB_LABEL),
        "monitoring/vllm-prometheusrule.yaml": render("k8s/monitoring/vllm-prometheusrule.yaml.j2", **common,
                                                      groups=groups),
    }
    files["kustomization.yaml"] = render("k8s/kustomization.yaml.j2", **common,
                                         resources=["vllm-pvc.yaml", "vllm-service.yaml", "vllm-deployment.yaml"])
    files["monitoring/kustomization.yaml"] = render(
        "k8s/monitoring/kustomization.yaml.j2", **common,
        resources=["vllm-servicemonitor.yaml", "vllm-prometheusrule.yaml"])
    if options.replicas > 1:
        warnings.append(f"{options.replicas} replicas share one cache volume: ReadWriteMany, which needs a storage "
                        "class that offers it (NFS, CephFS, EFS …)")

    out = str(options.out)
    steps = [f"kubectl create namespace {namespace}   # if it does not exist",
             *[s["create"] + ("   # optional" if s["optional"] else "") for s in secrets],
             f"kubectl apply -k {out}",
             f"kubectl apply -k {out}/monitoring   # with the Prometheus operator installed",
             f"kubectl -n {namespace} rollout status deployment/{name} --timeout={int(v.startup_timeout_s)}s",
             f"kubectl -n {namespace} port-forward service/{name} {v.port}:{PORT}",
             f"graphrag-migrate bench --url http://127.0.0.1:{v.port} --model {settings.model.served_name}"
             + (f"   # with {settings.vllm.api_key_env} set" if settings.vllm.api_key_env else "")]
    files["APPLY.md"] = _apply_text(name, namespace, secrets, steps, warnings)
    described = [
        RenderedFile("kustomization.yaml", "Kustomization", "kustomize"),
        RenderedFile("vllm-pvc.yaml", "PersistentVolumeClaim", "schema"),
        RenderedFile("vllm-service.yaml", "Service", "schema"),
        RenderedFile("vllm-deployment.yaml", "Deployment", "schema"),
        RenderedFile("monitoring/kustomization.yaml", "Kustomization", "kustomize"),
        RenderedFile("monitoring/vllm-servicemonitor.yaml", "ServiceMonitor", "crd"),
        RenderedFile("monitoring/vllm-prometheusrule.yaml", "PrometheusRule", "crd"),
        RenderedFile("APPLY.md", "how to apply it", "text"),
    ]
    assert {f.path for f in described} == set(files)
    return {k: text.encode() for k, text in files.items()}, described, secrets, warnings, steps


def _apply_text(name: str, namespace: str, secrets: list[dict], steps: list[str], warnings: list[str]) -> str:
    lines = ["# vLLM on Kubernetes (written by graphrag-migrate render k8s)", "",
             "No secret value is in these files: the pod reads each from a Secret you create.", ""]
    for s in secrets:
        lines.append(f"- Secret `{s['name']}`, key `{s['field']}` → `{s['env']}`"
                     f"{' (optional)' if s['optional'] else ''}: {s['why']}")
    lines += ["", "```bash", *steps, "```", ""]
    if warnings:
        lines += ["Warnings when it was rendered:", "", *[f"- {w}" for w in warnings], ""]
    return "\n".join(lines)


def validate(files: dict[str, bytes], described: list[RenderedFile]) -> bool:
    """The built-in kinds against Kubernetes' own schemas (kubernetes-validate, strict) when it is installed:
    False when it is not (nothing checked); a CheckFailed — before anything is written — when one fails."""
    try:
        import kubernetes_validate
    except ImportError:
        return False
    import yaml

    for item in described:
        if item.check != "schema":
            continue
        try:
            kubernetes_validate.validate(yaml.safe_load(files[item.path]), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise CheckFailed(f"{item.path} does not pass Kubernetes {K8S_VERSION}'s schema: {exc.message[:200]}",
                              "this is a bug in graphrag-migrate's templates: please report it") from None
    return True


# ---- the output directory: the operator's, except what an earlier render wrote ------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _marker(out: Path) -> dict[str, list[str]]:
    """What earlier renders wrote into `out` (relative path → the sha256s it may hold); {} without a marker."""
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
        files = data["files"]
        return {str(k): [str(s) for s in (v if isinstance(v, list) else [v])] for k, v in files.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{out / MARKER} cannot be read: which files render k8s wrote there is unknown",
                          "render into a new --out directory") from None


def _present(out: Path):
    """The files (and links to directories) under `out` (relative paths, the marker left out), one at a
    time: a caller that stops at the first one of the operator's does not walk the rest of, say, a home."""
    for root, dirs, names in os.walk(out):
        # a link to a directory is the operator's (writing through it would replace their files): listed
        # as an entry of its own, never walked into
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = sorted(set(dirs) - set(links))
        for n in sorted(names + links):
            rel = Path(root, n).relative_to(out).as_posix()
            if rel != MARKER:
                yield rel


def _leftover_of(rel: str) -> str | None:
    """The file a temp copy `atomic_write_bytes` left behind would have become (`.NAME.XXXXXXXX.tmp`, the
    name mkstemp gives it), else None."""
    folder, _, name = rel.rpartition("/")
    found = _TEMP_NAME.match(name)
    return None if not found else (f"{folder}/{found.group(1)}" if folder else found.group(1))


def guard(out: Path, planned: dict[str, bytes]) -> tuple[dict[str, list[str]], list[str]]:
    """(the earlier marker, the earlier files to remove — a killed run's temp copies too) — or a ConfigError naming a file of the operator's:
    one render k8s did not write, or one it wrote that was edited since. Reads only."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "pass a directory (it is created when missing)")
    if not out.is_dir():
        return {}, []
    marker = _marker(out)
    present, leftovers = [], []
    for rel in _present(out):
        if _leftover_of(rel) in {*marker, *planned, MARKER}:  # a run killed between a temp copy and its rename
            leftovers.append(rel)
            continue
        if rel not in marker:
            raise ConfigError(f"{out / rel} was not written by render k8s: {out} is not replaced",
                              "render into an empty or new --out directory; keep your own manifests in a "
                              "kustomize overlay beside it (resources: [../" + out.name + "])")
        present.append(rel)
    for rel in present:
        try:
            current = _sha((out / rel).read_bytes())
        except OSError as exc:
            raise from_os_error(exc, "reading", out / rel) from None
        if current not in marker[rel]:
            raise ConfigError(f"{out / rel} was edited since render k8s wrote it: not replaced",
                              "move your edit into a kustomize overlay (or the file aside), or render into "
                              "another --out directory")
    stale = [rel for rel in present if rel not in planned]
    return marker, stale + leftovers


def write(out: Path, files: dict[str, bytes], marker: dict[str, list[str]], stale: list[str]) -> None:
    """The files, each atomically; the marker first lists both the old and the new content of every file, so
    a run cut short leaves a directory the next run still recognises as its own."""
    from migrator.core.ledger import atomic_write_bytes

    def save_marker(entries: dict[str, list[str]]) -> None:
        doc = {"written_by": "graphrag-migrate render k8s", "files": entries}
        atomic_write_bytes(out / MARKER, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o644)

    try:
        out.mkdir(parents=True, exist_ok=True)
        during = {rel: sorted(set(marker.get(rel, [])) | {_sha(data)}) for rel, data in files.items()}
        during.update({rel: marker[rel] for rel in stale if rel in marker})
        save_marker(during)
        for rel, data in files.items():
            atomic_write_bytes(out / rel, data, mode=0o644)
        for rel in stale:
            (out / rel).unlink(missing_ok=True)
        save_marker({rel: [_sha(data)] for rel, data in files.items()})
    except OSError as exc:
        raise from_os_error(exc, "writing the manifests into", out) from None


def _claim_changes(out: Path, files: dict[str, bytes], marker: dict[str, list[str]]) -> list[str]:
    """What a re-render changes in the PVC that the cluster will not change in a claim that exists: its
    access modes (the spec is immutable), its size (smaller is refused; larger needs volume expansion)."""
    import yaml

    path = "vllm-pvc.yaml"
    if path not in marker or not (out / path).is_file():
        return []
    new = yaml.safe_load(files[path])
    try:
        old = yaml.safe_load((out / path).read_bytes())["spec"]
        modes = old["accessModes"], new["spec"]["accessModes"]
        sizes = old["resources"]["requests"]["storage"], new["spec"]["resources"]["requests"]["storage"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    changes = []
    if modes[0] != modes[1]:
        changes.append(f"accessModes {'/'.join(modes[0])} → {'/'.join(modes[1])}")
    if sizes[0] != sizes[1]:
        changes.append(f"storage {sizes[0]} → {sizes[1]}")
    if not changes:
        return []
    name, namespace = new["metadata"]["name"], new["metadata"]["namespace"]
    return [f"the claim {name} changes ({', '.join(changes)}): Kubernetes keeps a claim's spec immutable (but "
            "for a larger request, with a storage class that allows expansion), so `kubectl apply` fails on an "
            f"existing one — delete it first (kubectl -n {namespace} delete pvc {name}; the cache is then "
            "downloaded again)"]


def render_k8s(ctx: Context, options: K8sOptions) -> K8sResult:
    """Plan, check (the operator's files; the schemas where kubernetes-validate is installed), then write."""
    options = dataclasses.replace(options, out=Path(os.path.abspath(options.out)))
    files, described, secrets, warnings, steps = plan(ctx, options)
    marker, stale = guard(options.out, files)
    warnings += _claim_changes(options.out, files, marker)
    validated = validate(files, described)
    write(options.out, files, marker, stale)
    return K8sResult(options.out, options.namespace, described, validated, secrets, warnings, stale, steps)
