#!/usr/bin/env bash
# README's test command: set up (idempotent, cached) and run every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
exec python3 -m pytest "$@"
