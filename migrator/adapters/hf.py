"""Model download through huggingface_hub, pinned to a commit and verified against the Hub's sizes and sha256.

Around snapshot_download this module adds what an operator needs: the revision resolved to a commit
hash first (recorded in the ledger), a disk re-check against what is still missing, the token from the
environment or the env file (never printed), one-line errors for gated and missing repos, a verification
of every file after download — and resume across runs. huggingface_hub 2.x retries a dropped connection
within one run, but writes each attempt to a fresh `<etag>.<random>.incomplete` file, so after a killed
run (Ctrl-C, kill -9, a reboot) it starts a 65 GB file from zero and leaves the partial file behind.
`adopt_partial_downloads` continues the largest such file with a Range request (huggingface_hub's own
`http_get`), checks its sha256 and moves it into place; snapshot_download then only links it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from migrator.core import fit
from migrator.core.errors import EnvironmentMissing

# What vLLM needs: weights, configs, tokenizer files, the chat template (newer checkpoints keep it in
# chat_template.jinja). Not *.bin/*.pth duplicates, not images or docs.
ALLOW_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "tokenizer*", "*.model", "*.tiktoken",
                  "merges.txt", "vocab.txt", "vocab.json", "*.jinja"]


@dataclass
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files only: the Hub reports their sha256


@dataclass
class Snapshot:
    repo_id: str
    commit: str
    files: list[RemoteFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _matches(path: str) -> bool:
    from fnmatch import fnmatch

    name = path.rsplit("/", 1)[-1]
    return any(fnmatch(name, p) or fnmatch(path, p) for p in ALLOW_PATTERNS)


def _hub_error(exc: Exception, repo_id: str) -> EnvironmentMissing:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return EnvironmentMissing(f"{repo_id} is gated and this token has no access",
                                  "accept the licence on the model's Hub page and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return EnvironmentMissing(f"{repo_id} not found on the Hub (or private without a valid HF_TOKEN)",
                                  "check model.id, or set HF_TOKEN")
    if isinstance(exc, RevisionNotFoundError):
        return EnvironmentMissing(f"revision not found in {repo_id}", "check model.revision")
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return EnvironmentMissing(f"{repo_id} needs a valid Hugging Face token (HTTP 401)", "set HF_TOKEN")
    return EnvironmentMissing(f"the Hub failed for {repo_id}: {str(exc).splitlines()[0][:160]}",
                              "retry; a re-run resumes the download")


def resolve(repo_id: str, revision: str, token: str | None) -> Snapshot:
    """The commit a revision points at now, and the files to fetch with their sizes and hashes."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token or False)
    require_reachable(api.endpoint)
    try:
        commit = api.repo_info(repo_id, revision=revision).sha
        files = [RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs else None)
                 for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
                 if isinstance(f, RepoFile) and _matches(f.path)]
    except HfHubHTTPError as exc:
        raise _hub_error(exc, repo_id) from None
    return Snapshot(repo_id, commit, files)


def local_snapshot(repo_id: str, commit: str, cache_dir: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=commit, cache_dir=cache_dir, local_files_only=True,
                                      allow_patterns=ALLOW_PATTERNS))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None


def missing_bytes(snapshot: Snapshot, cache_dir: str) -> int:
    """Bytes still to fetch (partly downloaded `.incomplete` blobs count for what they hold)."""
    root = Path(cache_dir) / f"models--{snapshot.repo_id.replace('/', '--')}"
    have = 0
    for f in snapshot.files:
        path = root / "snapshots" / snapshot.commit / f.path
        if path.exists():
            have += f.size
    blobs = root / "blobs"
    partial = 0
    for f in snapshot.files:  # the largest partial file of each blob is what a resume keeps
        if f.sha256 and blobs.exists():
            sizes = [p.stat().st_size for p in blobs.glob(f"{f.sha256}.*.incomplete")]
            partial += max(sizes, default=0)
    return max(0, snapshot.total_bytes - have - partial)


def _blobs(snapshot: Snapshot, cache_dir: str) -> Path:
    return Path(cache_dir) / f"models--{snapshot.repo_id.replace('/', '--')}" / "blobs"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def adopt_partial_downloads(snapshot: Snapshot, cache_dir: str, token: str | None) -> list[tuple[str, int]]:
    """Continue partial LFS blobs left by an interrupted run. Returns (file, bytes already there) resumed."""
    from huggingface_hub import constants, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    blobs = _blobs(snapshot, cache_dir)
    resumed = []
    for f in snapshot.files:
        if not f.sha256 or (blobs / f.sha256).exists():
            continue
        partials = sorted(blobs.glob(f"{f.sha256}.*.incomplete"), key=lambda p: p.stat().st_size, reverse=True)
        if not partials:
            continue
        best, have = partials[0], partials[0].stat().st_size
        if 0 < have < f.size:
            url = hf_hub_url(snapshot.repo_id, f.path, revision=snapshot.commit, endpoint=constants.ENDPOINT)
            with open(best, "ab") as fh:
                http_get(url, fh, resume_size=have, headers=build_hf_headers(token=token or False),
                         expected_size=f.size)
            resumed.append((f.path, have))
        if best.stat().st_size == f.size and _sha256(best) == f.sha256:
            os.replace(best, blobs / f.sha256)
        for other in partials[1:]:
            other.unlink(missing_ok=True)  # older attempts: the same bytes, never to be used
    return resumed


def fetch(snapshot: Snapshot, cache_dir: str, token: str | None, console=None) -> Path:
    """Download (or finish) the snapshot. `console`: a rich Console on stderr for a progress bar, or None."""
    import contextlib

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    from migrator.adapters.progress import byte_progress, rich_tqdm

    if console is None:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    bars = byte_progress(console) if console is not None else contextlib.nullcontext()
    try:
        with bars as progress:
            adopt_partial_downloads(snapshot, cache_dir, token)
            kwargs = {"tqdm_class": rich_tqdm(progress)} if progress is not None else {}
            return Path(snapshot_download(snapshot.repo_id, revision=snapshot.commit, cache_dir=cache_dir,
                                          allow_patterns=ALLOW_PATTERNS, token=token or False, max_workers=4,
                                          **kwargs))
    except HfHubHTTPError as exc:
        raise _hub_error(exc, snapshot.repo_id) from None
    except OSError as exc:
        raise EnvironmentMissing(f"download of {snapshot.repo_id} interrupted: {exc}",
                                 "re-run phase1: it resumes where it stopped") from None


def verify(snapshot: Snapshot, path: Path, check_sha256: bool = True) -> list[str]:
    """Problems found: missing files, wrong sizes, wrong sha256 (LFS files). Empty = verified."""
    problems = []
    for f in snapshot.files:
        local = path / f.path
        if not local.exists():
            problems.append(f"{f.path} missing")
            continue
        size = local.stat().st_size
        if size != f.size:
            problems.append(f"{f.path} is {size} bytes, the Hub says {f.size}")
            continue
        if check_sha256 and f.sha256:
            if _sha256(local) != f.sha256:
                problems.append(f"{f.path} sha256 differs from the Hub's")
    return problems


def chat_template_source(path: Path) -> str | None:
    """Where the snapshot keeps its chat template (vLLM's chat endpoint needs one), or None."""
    for name in ("chat_template.jinja", "chat_template.json"):
        if (path / name).is_file():
            return name
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    return "tokenizer_config.json" if isinstance(config, dict) and config.get("chat_template") else None


def hf_token(env_file_values: dict[str, str]) -> str | None:
    """HF_TOKEN from the environment, else from the project's env file. Registered as a secret."""
    from migrator.core.secrets import register_secret

    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or env_file_values.get("HF_TOKEN")
    register_secret(token)
    return token or None


# ---- model metadata for the fit verdict: config.json and safetensors headers, no weights ----------
def read_hub(repo_id: str, revision: str = "main", token: str | None = None) -> "fit.ModelInfo":
    """From the Hub: config.json (a few KB) and the safetensors headers by range request; no weights."""
    from huggingface_hub import constants, get_safetensors_metadata, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import logging as hf_logging

    require_reachable(constants.ENDPOINT)
    hf_logging.set_verbosity_error()  # its retry warnings would interleave with our progress lines
    try:
        config = json.loads(Path(hf_hub_download(repo_id, "config.json", revision=revision, token=token)).read_text())
        meta = get_safetensors_metadata(repo_id, revision=revision, token=token)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise EnvironmentMissing(_hub_message(repo_id, status), _hub_fix(status)) from None
    except (OSError, ValueError) as exc:
        raise EnvironmentMissing(f"cannot read {repo_id} metadata from the Hub ({str(exc)[:120]})",
                                 "check the network, or use --model /local/dir") from None
    total = params = 0
    tensors: dict = {}
    for file_meta in meta.files_metadata.values():
        for name, info in file_meta.tensors.items():
            start, end = info.data_offsets
            total += end - start
            params += info.parameter_count
            tensors[name] = end - start
    return fit.from_config(repo_id, config, total, params, f"Hub metadata of {repo_id}@{revision}", tensors)


def require_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after huggingface_hub's five back-off retries, when the Hub is unreachable."""
    from migrator.adapters.http import request

    probe = request("HEAD", endpoint.rstrip("/") + "/api/health", timeout=timeout)
    if probe.status is None:
        raise EnvironmentMissing(f"cannot reach the Hugging Face Hub at {endpoint} ({probe.error})",
                                 "check the network or HF_ENDPOINT, or pass --model /local/dir")


def _hub_message(repo_id: str, status: int | None) -> str:
    return {401: f"{repo_id} needs a Hugging Face token (HTTP 401)",
            403: f"{repo_id} is gated: your token has no access yet (HTTP 403)",
            404: f"{repo_id} does not exist on the Hub, or is private (HTTP 404)"}.get(
        status or 0, f"the Hub refused {repo_id} (HTTP {status})")


def _hub_fix(status: int | None) -> str:
    return {401: "set HF_TOKEN in the environment or the env file",
            403: "accept the model's licence on its Hub page, then retry",
            404: "check model.id (ORG/NAME), or set HF_TOKEN for a private repo"}.get(
        status or 0, "retry later, or use --model /local/dir")
