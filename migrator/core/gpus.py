"""What a GPU can read and compute: the figures the speed prediction divides by.

Each figure carries its source. Peak tensor figures are *dense* (no 2:4 sparsity: LLM weights are not
sparse); where a sheet gives only the sparse figure it is halved and the comment says so. A figure that
could not be found is None, with a note — never a guess. Bandwidths are vendor peaks (GB/s, 10**9);
real kernels reach less (the one published point, Qwen3-32B bf16 on a DGX Spark, 0.88 of the GB10's
ceiling; vLLM-CPU's float32 kernel ~0.6 of its core's triad, benchmarks/speed_prediction.py), which is why the
predictions are ceilings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    name: str
    bandwidth_gbs: float  # memory bandwidth, GB/s
    memory_gb: float
    unified: bool
    tflops: dict = field(default_factory=dict)  # dense tensor TFLOPS by precision: bf16, fp8, fp4 (None: not found)
    sources: tuple = ()
    notes: str = ""

    def peak_tflops(self, precision: str) -> tuple[float | None, str]:
        """(dense TFLOPS for this precision, how it was obtained). A missing figure falls back to a
        published one of lower precision, halved per step (the tensor-core ratio of every generation here),
        and says so; with none published, (None, "not published")."""
        order = ["bf16", "fp8", "fp4"]
        value = self.tflops.get(precision)
        if value:
            return float(value), "datasheet"
        start = order.index(precision) if precision in order else 0
        for step, lower in enumerate(order[start + 1:], 1):
            if self.tflops.get(lower):
                return float(self.tflops[lower]) / 2 ** step, f"derived from {lower} ÷ {2 ** step} (no {precision} figure published)"
        for step, higher in enumerate(reversed(order[:start]), 1):
            if self.tflops.get(higher):
                return float(self.tflops[higher]), f"{higher} figure (no {precision} tensor path)"
        return None, "not published"


_NVIDIA_H100 = "https://www.nvidia.com/en-us/data-center/h100/ (datasheet; mirrored at archive-lib.hpctech.co.jp/gpuproduct/nvidia-h100.html: sparse figures, 'specifications 1/2 lower without sparsity')"

GPUS: dict[str, Gpu] = {
    "GB10": Gpu(
        "NVIDIA GB10", 273, 128, True,
        # NVIDIA publishes only "up to 1 petaFLOP FP4 with sparsity" → 500 dense; no bf16/fp8 tensor figure.
        {"bf16": None, "fp8": None, "fp4": 500},
        ("https://www.nvidia.com/en-us/products/workstations/dgx-spark/ (128 GB LPDDR5X unified, 273 GB/s, "
         "1 PFLOP FP4 sparse; quoted at ai-infrastructure.net/dgx-spark/ and dgx-spark.warehack.ing/hardware/)",),
        "bf16 and fp8 tensor peaks not published by NVIDIA"),
    "H100 SXM": Gpu(
        "NVIDIA H100 SXM", 3350, 80, False, {"bf16": 989.4, "fp8": 1978.9, "fp4": None},
        (_NVIDIA_H100, "glennklockwood.com/garden/processors/h100 (dense BF16 989.4, FP8 1978.9)"),
        "Hopper has no fp4 tensor path"),
    "H100 PCIe": Gpu(
        "NVIDIA H100 PCIe", 2000, 80, False, {"bf16": 756.5, "fp8": 1513, "fp4": None},
        (_NVIDIA_H100 + " — PCIe: BF16 1,513*, FP8 3,026* sparse, 2,000 GB/s",),
        "Hopper has no fp4 tensor path"),
    "H200": Gpu(
        "NVIDIA H200 SXM", 4800, 141, False, {"bf16": 989.4, "fp8": 1978.9, "fp4": None},
        ("https://www.nvidia.com/en-us/data-center/h200/ (141 GB HBM3e, 4.8 TB/s; FP8 3,958 TFLOPS with sparsity, "
         "compute identical to H100 SXM; quoted at lzwjava.github.io/nvidia-h200-gpu-specs-en)",),
        "Hopper has no fp4 tensor path"),
    "A100 80GB": Gpu(
        "NVIDIA A100 80GB SXM", 2039, 80, False, {"bf16": 312, "fp8": None, "fp4": None},
        ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf "
         "(BF16 312 dense / 624 sparse; 80 GB HBM2e 2,039 GB/s; via glennklockwood.com/garden/processors/A100)",),
        "Ampere has no fp8/fp4 tensor path"),
    "A100 40GB": Gpu(
        "NVIDIA A100 40GB SXM", 1555, 40, False, {"bf16": 312, "fp8": None, "fp4": None},
        ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf "
         "(40 GB HBM2 1,555 GB/s; via glennklockwood.com/garden/processors/A100)",),
        "Ampere has no fp8/fp4 tensor path"),
    "L40S": Gpu(
        "NVIDIA L40S", 864, 48, False, {"bf16": 362.05, "fp8": 733, "fp4": None},
        ("https://www.nvidia.com/en-us/data-center/l40s/ (datasheet: BF16 362.05 | 733*, FP8 733 | 1,466*, "
         "864 GB/s; table quoted at mullet.se product 355414)",),
        "Ada has no fp4 tensor path"),
    "L4": Gpu(
        "NVIDIA L4", 300, 24, False, {"bf16": 121, "fp8": 242.5, "fp4": None},
        ("https://www.nvidia.com/en-us/data-center/l4/ (24 GB, 300 GB/s; FP16 242 and FP8 485 TFLOPS with "
         "sparsity, halved here; quoted at grokipedia.com/page/NVIDIA_L4_vs_L40S)",),
        "Ada has no fp4 tensor path"),
    "A10": Gpu(
        "NVIDIA A10", 600, 24, False, {"bf16": None, "fp8": None, "fp4": None},
        ("https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/ (24 GB GDDR6, 600 GB/s)",),
        "tensor TFLOPS not found in the sources searched: prefill/TTFT not predicted"),
    "RTX 4090": Gpu(
        "NVIDIA GeForce RTX 4090", 1008, 24, False, {"bf16": 165.2, "fp8": 330.3, "fp4": None},
        ("https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf (Ada whitepaper; "
         "BF16 FP32-accumulate 165.2 dense, FP8 FP32-accumulate 330.3 dense, 1,008 GB/s; quoted at "
         "gigagpu.com/?p=34220 and hmc-tech.com)",),
        "GeForce: FP32-accumulate rates (what vLLM's kernels use) are half the FP16-accumulate ones"),
    "RTX 5090": Gpu(
        "NVIDIA GeForce RTX 5090", 1792, 32, False, {"bf16": 209.6, "fp8": 419.2, "fp4": 1676},
        ("https://www.spheron.network/blog/nvidia-rtx-5090-specs/ (1,792 GB/s, 32 GB GDDR7; sparse FP16 838.4, "
         "FP8 1,676.8, FP4 3,352 — halved to dense; bf16/fp8 halved again for FP32 accumulate on GeForce)",),
        "bf16/fp8 are FP32-accumulate figures derived as above"),
    "RTX 6000 Ada": Gpu(
        "NVIDIA RTX 6000 Ada Generation", 960, 48, False, {"bf16": None, "fp8": None, "fp4": None},
        ("https://www.grafikkarten.com/de/news/nvidia-rtx-6000-grafikkarte-der-ada-generation (48 GB, 384-bit, "
         "960 GB/s)",),
        "tensor TFLOPS not found in the sources searched: prefill/TTFT not predicted"),
}

_ALIASES = [  # how nvidia-smi and people spell them → table key (first match wins: longer names first)
    (r"GB10|DGX\s*Spark", "GB10"),
    (r"H100.*(PCIe|NVL)", "H100 PCIe"),
    (r"H100", "H100 SXM"),
    (r"H200", "H200"),
    (r"A100.*(80|80GB)", "A100 80GB"),
    (r"A100", "A100 40GB"),
    (r"L40S", "L40S"),
    (r"\bL4\b", "L4"),
    (r"\bA10G?\b", "A10"),
    (r"4090", "RTX 4090"),
    (r"5090", "RTX 5090"),
    (r"6000 Ada", "RTX 6000 Ada"),
]


def lookup(name: str) -> Gpu | None:
    """The table's entry for a name as nvidia-smi prints it ("NVIDIA H100 80GB HBM3") or as typed ("h100")."""
    for pattern, key in _ALIASES:
        if re.search(pattern, name, re.I):
            return GPUS[key]
    return None


def cpu(bandwidth_gbs: float, name: str = "this CPU (measured triad)") -> Gpu:
    """The same arithmetic for a CPU or any other part: only its bandwidth is known."""
    return Gpu(name, bandwidth_gbs, 0, True, {}, ("measured or given with --assume-bandwidth",))
