"""What the GPU and the host offer: nvidia-smi, /proc/meminfo, disk.

On unified-memory parts (GB10 / DGX Spark, Jetson) nvidia-smi reports memory as "[N/A]" or
"Not Supported": that means "budget from system RAM", not zero and not an error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MiB = 2**20
UNIFIED_PARTS = re.compile(r"GB10|DGX Spark|Jetson|Orin|Thor", re.I)
QUERY = "name,driver_version,memory.total,memory.free,compute_cap"


@dataclass
class GpuInfo:
    name: str
    driver: str
    compute_capability: str
    total_bytes: int | None  # None: not reported
    free_bytes: int | None
    unified: bool = False
    warning: str = ""


@dataclass
class GpuReport:
    gpus: list[GpuInfo] = field(default_factory=list)
    cuda_version: str = ""
    error: str = ""


def _mib(value: str) -> int | None:
    value = value.strip()
    if not value or value.startswith("[") or "not supported" in value.lower() or value.upper() == "N/A":
        return None
    return int(float(value.split()[0]) * MiB)


def parse_query(csv_text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free,compute_cap
    --format=csv,noheader,nounits`."""
    gpus = []
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        name, driver, total, free, cc = parts[:5]
        info = GpuInfo(name, driver, cc, _mib(total), _mib(free))
        if info.total_bytes is None or info.free_bytes is None:
            if UNIFIED_PARTS.search(name):
                info.unified = True
            else:
                info.warning = (f"{name} does not report its memory; treating it as unified memory "
                                "(budget from system RAM) — pass --assume-gpu-memory to override")
                info.unified = True
        gpus.append(info)
    return gpus


def query(nvidia_smi: str = "nvidia-smi") -> GpuReport:
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return GpuReport(error="nvidia-smi not found: no NVIDIA driver on this host")
    try:
        proc = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20)
        head = subprocess.run([exe], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return GpuReport(error="nvidia-smi did not answer in 20 s (driver hung?)")
    if proc.returncode != 0:
        return GpuReport(error=f"nvidia-smi failed: {(proc.stderr or proc.stdout).strip()[:200]}")
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", head.stdout or "")
    return GpuReport(parse_query(proc.stdout), cuda.group(1) if cuda else "")


MEMINFO_PATH = "/proc/meminfo"  # the tests point it at a file they rewrite


def meminfo(path: str | None = None) -> dict[str, int]:
    """MemTotal / MemAvailable in bytes."""
    out = {}
    for line in Path(path or MEMINFO_PATH).read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def disk_free(path: str) -> tuple[str, int]:
    """(existing directory checked, free bytes) for `path` or its nearest existing parent."""
    p = Path(os.path.expanduser(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p), shutil.disk_usage(p).free
