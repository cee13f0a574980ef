#!/usr/bin/env bash
# README's test command: set up (idempotent, cached) and run every test tier.
#
# The fast tier and the Docker/vLLM tiers run side by side, as three pytest sessions: the slow tiers spend most
# of their time waiting on containers and servers (a serial run keeps a 2-core box at a load of ~0.7), so the
# overlap cuts the wall time to about the longest session's. The ten fixture projects' whole chains under
# compose (marker `chain`, ~15 min) are a session of their own beside the other Docker and vLLM tests. Each
# session has its own temp dir, names and orphan check. Given `-m` (your own tier selection) or
# GM_TEST_SERIAL=1, it is one session, as plain pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh

for arg in "$@"; do
  if [[ "$arg" == "-m" || "$arg" == -m?* ]]; then GM_TEST_SERIAL=1; fi
done
if [[ "${GM_TEST_SERIAL:-0}" == 1 ]]; then
  exec python3 -m pytest "$@"
fi

slow_log=$(mktemp "${TMPDIR:-/tmp}/graphrag-migrate-slow-tiers.XXXXXX")
chain_log=$(mktemp "${TMPDIR:-/tmp}/graphrag-migrate-chain-tier.XXXXXX")
python3 -m pytest -m "(docker or vllm) and not chain" "$@" >"$slow_log" 2>&1 &
slow=$!
python3 -m pytest -m "chain" "$@" >"$chain_log" 2>&1 &
chain=$!
trap 'kill "$slow" "$chain" 2>/dev/null || true' INT TERM

echo "[tests] fast tier here; Docker and vLLM tiers beside it (their output follows)" >&2
fast_rc=0
python3 -m pytest -m "not docker and not vllm" "$@" || fast_rc=$?
slow_rc=0
wait "$slow" || slow_rc=$?
chain_rc=0
wait "$chain" || chain_rc=$?
echo "[tests] ---- Docker and vLLM tiers ----" >&2
cat "$slow_log"
echo "[tests] ---- the fixture projects' whole chains (docker, chain) ----" >&2
cat "$chain_log"
rm -f "$slow_log" "$chain_log"

# 5 = nothing collected: fine for a session when another ran tests (a path with one tier only).
rcs=("$fast_rc" "$slow_rc" "$chain_rc")
ran=0
for rc in "${rcs[@]}"; do if [[ $rc != 5 ]]; then ran=1; fi; done
echo "[tests] fast tier exit $fast_rc, Docker/vLLM tiers exit $slow_rc, fixture chains exit $chain_rc" >&2
for rc in "${rcs[@]}"; do
  if [[ $rc != 0 && ! ( $rc == 5 && $ran == 1 ) ]]; then exit "$rc"; fi
done
exit 0
