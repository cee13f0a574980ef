"""Build the Docker images the tests and the rehearsal run, locally and cached by a content hash.

No image registry is reachable here: the base image is a Debian minbase made with debootstrap and
turned into an image with `docker import`. Each image's tag carries a hash of its recipe, so a rerun
with an unchanged recipe finds the image and skips the build.

Run as `python -m migrator.harness.images` to build (or find) them all and print their tags.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def base_image() -> str:
    """A Debian minbase image with python3, built once per recipe."""
    recipe = {
        "suite": DEBIAN_SUITE,
        "variant": "minbase",
        "packages": sorted(BASE_PACKAGES),
        "arch": os.uname().machine,
    }
    tag = f"graphrag-migrate-base:{recipe_hash(recipe)}"
    if image_exists(tag):
        _log(f"{tag} cached")
        return tag
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
    return tag


def main() -> None:
    print(base_image())


if __name__ == "__main__":
    main()
