"""`graphrag-migrate render …`: what the tool knows, rendered for another place vLLM runs (thin commands).

Not `migrator.cli.render`, which turns reports into human output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from migrator.cli._common import command, state_of

render_app = typer.Typer(help="Render the vLLM deployment for somewhere past this box (Kubernetes).",
                         no_args_is_help=True, rich_markup_mode=None)


@render_app.command("k8s")
@command
def k8s(ctx: typer.Context,
        out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory to write the manifests into (created; never one holding files render k8s did not write).")],
        namespace: Annotated[str, typer.Option("--namespace", metavar="NS", help="Kubernetes namespace of every object.")] = "graphrag",
        replicas: Annotated[int, typer.Option("--replicas", metavar="N", help="vLLM pods (each a whole copy of the model).")] = 1,
        gpus_per_replica: Annotated[Optional[int], typer.Option("--gpus-per-replica", metavar="N", help="GPUs per pod; above 1 vLLM gets --tensor-parallel-size N [default: vllm.tensor_parallel_size].")] = None,
        target: Annotated[str, typer.Option("--target", help="What to render: manifests (plain manifests and kustomizations).")] = "manifests",
        cache_size: Annotated[str, typer.Option("--cache-size", metavar="QUANTITY", help="Size of the cache volume (HF cache and vLLM's compile cache).")] = "200Gi"):
    """The same vLLM as on this box, as Kubernetes manifests: a Deployment (pinned image, vLLM's arguments
    from migrate.yaml, the GPU requested, startup/readiness/liveness probes, secrets by secretKeyRef), a
    ClusterIP Service, a PVC for the HF cache, a kustomization; phase4's alert rules as a PrometheusRule and
    a ServiceMonitor in monitoring/ (CRDs, not schema-checked).

    Reads migrate.yaml and the ledger; no cluster, no network. Touches: DIR only (a marker file records what
    it wrote; a file it did not write, or one edited since, stops it with exit 2).
    """
    from migrator.app import api
    from migrator.app.k8s import K8sOptions

    state = state_of(ctx)
    options = K8sOptions(out=out, namespace=namespace, replicas=replicas, gpus_per_replica=gpus_per_replica,
                         target=target, cache_size=cache_size)
    result = api.render_k8s(state.project, state.settings(), options)
    _report(state.out, result)
    return result


def _report(out, result) -> None:
    """stderr: each file written (CRDs marked not schema-checked), the warnings, the Secrets expected;
    stdout: the commands that apply and check it (or the one JSON document)."""
    for item in result.files:
        out.info(f"wrote {result.out / item.path}: {item.describe(result.validated)}")
    for rel in result.removed:
        out.info(f"removed {result.out / rel} (an earlier render k8s wrote it; not rendered any more)")
    for warning in result.warnings:
        out.warn(warning)
    for secret in result.secrets:
        optional = ", optional" if secret["optional"] else ""
        out.info(f"expects Secret {secret['name']} (key {secret['field']} → {secret['env']}{optional}): "
                 f"{secret['create']}")
    out.data(result.to_dict(), lambda console: [console.print(line) for line in result.next_steps])
