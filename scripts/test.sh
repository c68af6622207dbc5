#!/usr/bin/env bash
# Set up everything the tests need, then run every test.
#   scripts/test.sh            every test, the lab suite on local namespaced nodes (CI)
#   scripts/test.sh --vagrant  the lab suite on three Vagrant VMs (lab/README.md; ~15 min)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--vagrant" ]; then
  shift
  scripts/setup.sh --vagrant
  exec .venv/bin/python -m pytest -q tests/integration/lab --lab=vagrant "$@"
fi
scripts/setup.sh --system
exec .venv/bin/python -m pytest -q --durations=12 "$@"
