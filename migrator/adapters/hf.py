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
class HubUnreachable(EnvironmentMissing):
    """The Hub's endpoint did not answer at all (refused, no DNS, timed out): nothing else will this run."""

    def __init__(self, message: str, fix: str, reason: str):
        super().__init__(message, fix)
        self.reason = reason  # in a few words, for an alternative's `source`


class HubRefused(EnvironmentMissing):
    """The Hub answered, with an HTTP error for this repo (401/403 gated or private, 404 missing …)."""

    def __init__(self, message: str, fix: str, status: int | None):
        super().__init__(message, fix)
        self.status = status
        self.reason = {401: "gated: 401 — set HF_TOKEN",
                       403: "gated: 403 — accept its licence on the Hub with HF_TOKEN's account",
                       404: "not on the Hub (404)"}.get(status or 0, f"the Hub refused it (HTTP {status})")


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import), else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or constants.ENDPOINT


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set true, as huggingface_hub reads it: no Hub request at all."""
    return any((os.environ.get(name) or "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def read_hub(repo_id: str, revision: str = "main", token: str | None = None, *, timeout: float | None = None,
             endpoint: str | None = None) -> "fit.ModelInfo":
    """From the Hub: config.json (a few KB) and the safetensors headers by range request; no weights.
    The small files go to a temporary cache, removed after: a check leaves nothing in the HF cache (a
    snapshot there holding only config.json would look like a download). `timeout`: each request's."""
    import tempfile

    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import logging as hf_logging

    endpoint = endpoint or hub_endpoint()
    require_reachable(endpoint, timeout or 5.0)
    hf_logging.set_verbosity_error()  # its retry warnings would interleave with our progress lines
    api = HfApi(endpoint=endpoint, token=token)
    per_request = timeout or constants.HF_HUB_DOWNLOAD_TIMEOUT
    try:
        with tempfile.TemporaryDirectory(prefix="graphrag-migrate-hub-") as cache:
            def small_file(name: str) -> dict:
                return json.loads(Path(hf_hub_download(repo_id, name, revision=revision, token=token,
                                                       endpoint=endpoint, cache_dir=cache,
                                                       etag_timeout=timeout or constants.HF_HUB_ETAG_TIMEOUT)
                                       ).read_text())

            config = small_file("config.json")
            if api.file_exists(repo_id, "model.safetensors", revision=revision, token=token):
                shards = ["model.safetensors"]
            elif api.file_exists(repo_id, "model.safetensors.index.json", revision=revision, token=token):
                shards = sorted(set(small_file("model.safetensors.index.json").get("weight_map", {}).values()))
            else:
                raise EnvironmentMissing(f"{repo_id} has no safetensors weights on the Hub",
                                         "vLLM needs safetensors weights: pick another repo")
            headers = _in_parallel(lambda name: api.parse_safetensors_file_metadata(
                repo_id, name, revision=revision, token=token, timeout=per_request), shards)
            quant = (fit.modelopt_quant(small_file("hf_quant_config.json"))
                     if api.file_exists(repo_id, "hf_quant_config.json", revision=revision, token=token) else {})
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise HubRefused(_hub_message(repo_id, status), _hub_fix(status), status) from None
    except Exception as exc:
        cause = _transport_failure(exc)
        if cause is not None:  # refused, reset or timed out after the probe answered: the Hub is not usable now
            what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            raise HubUnreachable(f"the Hugging Face Hub at {endpoint} stopped answering for {repo_id} ({what[:120]})",
                                 "check the network or HF_ENDPOINT, or pass --model /local/dir",
                                 f"Hub unreachable at {endpoint} ({what[:120]})") from None
        if isinstance(exc, (OSError, ValueError)):
            raise EnvironmentMissing(f"cannot read {repo_id} metadata from the Hub ({str(exc)[:120]})",
                                     "check the network, or use --model /local/dir") from None
        raise
    as_read = [{name: {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": list(info.data_offsets)}
                for name, info in file_meta.tensors.items()} for file_meta in headers]
    return fit.from_headers(repo_id, config, as_read, f"Hub metadata of {repo_id}@{revision}", quant)


def _transport_failure(exc: BaseException) -> BaseException | None:
    """The connection-level failure (refused, reset, timed out) behind a huggingface_hub error, if any:
    it wraps them (a HEAD that timed out becomes "cannot find the requested files in the local cache")."""
    try:
        import httpx2 as httpx  # huggingface_hub 2.x's HTTP client
    except ImportError:  # pragma: no cover - 1.x used httpx
        import httpx
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (httpx.TransportError, TimeoutError, ConnectionError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _in_parallel(fn, items: list, workers: int = 8) -> list:
    """fn over items on a few daemon threads (a model has up to dozens of shards, each one range request);
    the first error re-raised. Daemon threads, not an executor: one hung request must not hold the
    process open at exit after its caller gave up (read_hub_within)."""
    import threading

    results: dict = {}
    errors: list = []
    pending = list(enumerate(items))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                i, item = pending.pop()
            try:
                results[i] = fn(item)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True, name="hub-headers") for _ in range(min(workers, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(items))]


def read_hub_within(repo_id: str, revision: str, token: str | None, deadline_s: float,
                    timeout: float) -> "fit.ModelInfo":
    """read_hub, given up after `deadline_s` whatever huggingface_hub's own retries and back-offs would
    do: a Hub that accepts and never answers, or stalls half-way, must not stall a check. The abandoned
    call ends on its own request timeouts, in a daemon thread. HubUnreachable on the deadline."""
    import threading

    import huggingface_hub  # noqa: F401 - imported before the clock starts: on a busy box the import alone
    # (huggingface_hub and its HTTP client) can take seconds, and it is not the Hub being slow

    endpoint = hub_endpoint()
    box: dict = {}

    def run() -> None:
        try:
            box["info"] = read_hub(repo_id, revision, token, timeout=timeout, endpoint=endpoint)
        except BaseException as exc:  # re-raised below, in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name=f"hub-read {repo_id}")
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        reason = f"Hub unreachable at {endpoint} (no complete answer within {deadline_s:g} s)"
        raise HubUnreachable(f"the Hugging Face Hub at {endpoint} did not answer for {repo_id} within "
                             f"{deadline_s:g} s", "check the network or HF_ENDPOINT", reason)
    if "error" in box:
        raise box["error"]
    return box["info"]


def require_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after huggingface_hub's five back-off retries, when the Hub is unreachable."""
    from migrator.adapters.http import request

    probe = request("HEAD", endpoint.rstrip("/") + "/api/health", timeout=timeout)
    if probe.status is None:
        raise HubUnreachable(f"cannot reach the Hugging Face Hub at {endpoint} ({probe.error})",
                             "check the network or HF_ENDPOINT, or pass --model /local/dir",
                             f"Hub unreachable at {endpoint} ({probe.error})")


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
