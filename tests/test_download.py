"""phase1's Hub path — metadata for the verdict, download, resume, errors — through the real
huggingface_hub code against a stand-in Hub on loopback (no hub is reachable here)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from fakehub import COMMIT, FakeHub
from migrator.core.errors import ExitCode
from migrator.app.harness.tiny_model import build as build_tiny
from migrator.core.ledger import Ledger

REPO_ID = "test-org/tiny-qwen"
TOKEN = "hf_" + "GatedAccessToken0123456789ab"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("hubrepo") / "tiny-qwen")


@pytest.fixture(scope="module")
def big_model_dir(tmp_path_factory, model_dir):
    """The tiny model plus a 24 MB weights file: huggingface_hub writes in 10 MB chunks, so only a file
    this size leaves a partial download on disk when the run is killed."""
    import shutil

    import numpy as np
    from safetensors.numpy import save_file

    big = tmp_path_factory.mktemp("bigrepo") / "big"
    shutil.copytree(model_dir, big)
    save_file({"extra": np.arange(6_000_000, dtype=np.float32)}, str(big / "big.safetensors"))
    return big


@pytest.fixture(scope="module")
def template_dirs(tmp_path_factory, model_dir):
    """The tiny model with its chat template in chat_template.jinja (as newer checkpoints keep it), and
    with none at all (a base model)."""
    import shutil

    root = tmp_path_factory.mktemp("templates")
    jinja, bare = root / "jinja", root / "bare"
    for out in (jinja, bare):
        shutil.copytree(model_dir, out)
        config = json.loads((out / "tokenizer_config.json").read_text())
        template = config.pop("chat_template")
        (out / "tokenizer_config.json").write_text(json.dumps(config))
    (jinja / "chat_template.jinja").write_text(template)
    return jinja, bare


@pytest.fixture
def hub(model_dir, big_model_dir, template_dirs):
    h = FakeHub({REPO_ID: model_dir, "test-org/gated": model_dir, "test-org/big": big_model_dir,
                 "test-org/jinja": template_dirs[0], "test-org/bare": template_dirs[1]},
                gated={"test-org/gated": TOKEN}).start()
    yield h
    h.stop()


def cli(sandbox, hub, tmp_path, *args, env=None):
    full_env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO),
                **(env or {})}
    full_env.pop("HF_TOKEN", None)
    full_env.update({k: v for k, v in (env or {}).items()})
    return subprocess.run([sys.executable, "-m", "migrator.cli.main", "--project", str(sandbox), "--json",
                           "--set", f"vllm.hf_cache={tmp_path / 'hf'}", *args],
                          capture_output=True, text=True, env=full_env, cwd=REPO, timeout=120)


def steps(proc):
    return {s["id"]: s for s in json.loads(proc.stdout)["steps"]}


def test_fit_verdict_from_hub_metadata_without_downloading_weights(sandbox, hub, tmp_path, model_dir):
    proc = cli(sandbox, hub, tmp_path, "--set", f"model.id={REPO_ID}", "phase1", "--check")
    fit = steps(proc)["phase1.fit"]
    assert fit["status"] in ("ok", "warn"), fit
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    assert fit["measurements"]["weight_gib"] == pytest.approx(weights / 2**30, abs=0.01)
    assert "Hub metadata" in fit["measurements"]["model_source"]
    # Only ranges of the weights were read: the header, never the whole file.
    weight_gets = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    assert weight_gets and all(r[2].startswith("bytes=0-") or r[2].startswith("bytes=8-") for r in weight_gets)
    assert not (tmp_path / "hf").exists() or not list((tmp_path / "hf").rglob("*.safetensors"))


def test_download_pins_the_commit_verifies_and_serves(sandbox, hub, tmp_path):
    proc = cli(sandbox, hub, tmp_path, "--set", f"model.id={REPO_ID}", "phase1")
    assert proc.returncode == 0, proc.stderr
    model = Ledger(sandbox).read_state()["resources"]["model"]
    assert model["commit"] == COMMIT and model["verified"]
    assert model["path"].endswith(f"snapshots/{COMMIT}") and os.path.isdir(model["path"])
    command = Ledger(sandbox).read_state()["resources"]["vllm"]["command"]
    assert command[command.index("--model") + 1] == model["path"]  # vLLM runs from the verified snapshot
    again = cli(sandbox, hub, tmp_path, "--set", f"model.id={REPO_ID}", "phase1", "--check")
    assert steps(again)["phase1.download"]["status"] == "ok"
    cli(sandbox, hub, tmp_path, "rollback", "--wait", "5")


def test_chat_template_jinja_is_downloaded_and_a_model_without_a_template_is_refused(sandbox, hub, tmp_path):
    proc = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/jinja", "phase1", "--no-bench")
    assert proc.returncode == 0, proc.stderr
    model = Ledger(sandbox).read_state()["resources"]["model"]
    assert os.path.isfile(os.path.join(model["path"], "chat_template.jinja"))
    assert steps(proc)["phase1.download"]["measurements"]["chat_template"] == "chat_template.jinja"
    cli(sandbox, hub, tmp_path, "rollback", "--wait", "5")
    bare = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/bare", "phase1", "--no-bench")
    assert bare.returncode == ExitCode.CHECK_FAILED
    doc = json.loads(bare.stdout)
    assert "has no chat template" in doc["error"] and "--chat-template" in doc["fix"]
    assert Ledger(sandbox).read_state()["phases"]["phase1"]["failed_step"] == "phase1.download"
    assert "vllm" not in Ledger(sandbox).read_state()["resources"]  # vLLM never started


def resumed_ranges(hub, name="big.safetensors"):
    return [int(r[2][6:].split("-")[0]) for r in hub.requests
            if r[0] == "GET" and r[1].endswith(name) and r[2].startswith("bytes=")
            and not r[2].startswith(("bytes=0-", "bytes=8-"))]


def test_dropped_connection_is_retried_within_the_run(sandbox, hub, tmp_path):
    hub.cut_after["model.safetensors"] = 300_000
    proc = cli(sandbox, hub, tmp_path, "--set", f"model.id={REPO_ID}", "phase1")
    assert proc.returncode == 0, proc.stderr
    gets = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")
            and not r[2].startswith(("bytes=0-1", "bytes=8-"))]
    assert len(gets) >= 2  # the dropped transfer was fetched again, and the result verified
    assert Ledger(sandbox).read_state()["resources"]["model"]["verified"]
    cli(sandbox, hub, tmp_path, "rollback", "--wait", "5")


def test_killed_download_resumes_on_the_next_run(sandbox, hub, tmp_path):
    import signal
    import time

    hub.stall_after["big.safetensors"] = 15_000_000
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(REPO)}
    env.pop("HF_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "migrator.cli.main", "--project", str(sandbox),
                             "--set", f"vllm.hf_cache={tmp_path / 'hf'}", "--set", "model.id=test-org/big", "phase1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    partial = []
    while time.monotonic() < deadline and not partial:
        partial = [p for p in (tmp_path / "hf").rglob("*.incomplete") if p.stat().st_size >= 10_000_000]
        time.sleep(0.1)
    assert partial, "the download never started"
    proc.send_signal(signal.SIGKILL)  # as a power cut or kill -9 would
    proc.wait(10)
    hub.release.set()
    state = Ledger(sandbox).read_state()
    assert state["phases"]["phase1"]["steps"]["phase1.download"]["status"] == "applying"
    again = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/big", "phase1")
    assert again.returncode == 0, again.stderr
    assert resumed_ranges(hub) and resumed_ranges(hub)[-1] >= 10_000_000  # only the rest was fetched
    assert Ledger(sandbox).read_state()["resources"]["model"]["verified"]
    assert not list((tmp_path / "hf").rglob("*.incomplete"))  # no partial file left behind
    cli(sandbox, hub, tmp_path, "rollback", "--wait", "5")


def test_gated_repo_needs_the_token_and_never_shows_it(sandbox, hub, tmp_path):
    refused = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/gated", "phase1", "--check")
    fit = steps(refused)["phase1.fit"]
    assert refused.returncode == ExitCode.CHECK_FAILED
    assert "needs a Hugging Face token" in fit["message"] and "HF_TOKEN" in fit["fix"]
    env_path = sandbox / "docker" / ".env"
    env_path.write_text(env_path.read_text() + f"HF_TOKEN={TOKEN}\n")  # from the env file, as operators keep it
    allowed = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/gated", "phase1", "--check")
    assert steps(allowed)["phase1.fit"]["status"] in ("ok", "warn")
    assert TOKEN not in allowed.stdout + allowed.stderr


def test_missing_repo_is_one_clear_line(sandbox, hub, tmp_path):
    proc = cli(sandbox, hub, tmp_path, "--set", "model.id=test-org/nope", "phase1", "--check")
    fit = steps(proc)["phase1.fit"]
    assert "does not exist on the Hub" in fit["message"] and "model.id" in fit["fix"]


def test_offline_mode_uses_the_cache_only(sandbox, hub, tmp_path):
    proc = cli(sandbox, hub, tmp_path, "--set", f"model.id={REPO_ID}", "phase1", "--check",
               env={"HF_HUB_OFFLINE": "1"})
    download = steps(proc)["phase1.download"]
    assert download["status"] == "missing" and "HF_HUB_OFFLINE=1" in download["message"]


def test_download_progress_is_a_rich_bar_on_stderr(hub, tmp_path):
    code = f"""
from rich.console import Console
from migrator.adapters import hf as download
console = Console(stderr=True, force_terminal=True, width=100)
path = download.fetch(download.Snapshot({REPO_ID!r}, {COMMIT!r}, []), {str(tmp_path / 'hf')!r}, None, console=console)
print(path)
"""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(os.path.join(proc.stdout.strip(), "model.safetensors"))
    assert "Downloading bytes" in proc.stderr and "MB" in proc.stderr  # rich's DownloadColumn, on stderr
