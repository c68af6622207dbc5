#!/usr/bin/env bash
# Set up everything the tests need, then run every test.
#   scripts/test.sh            every test, the lab suite on local namespaced nodes (CI)
#   scripts/test.sh --vagrant  the lab suite on three Vagrant VMs (lab/README.md; ~15 min)
#   scripts/test.sh --master   the lab suite on the master lab: Puppet Server, PuppetDB, agents
#                              (lab/README.md); CI's default run deselects its `master` tests
#   scripts/test.sh --mutants  the mutation check (scripts/mutants.py; tests/README.md), not in CI
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--vagrant" ]; then
  shift
  scripts/setup.sh --vagrant
  exec .venv/bin/python -m pytest -q tests/integration/lab --lab=vagrant "$@"
fi
if [ "${1:-}" = "--master" ]; then
  shift
  scripts/setup.sh --master
  exec .venv/bin/python -m pytest -q --durations=12 tests/integration/lab --lab-master \
    --deselect tests/integration/lab/test_sim_vs_lab.py "$@"
fi
if [ "${1:-}" = "--mutants" ]; then
  shift
  scripts/setup.sh --system
  exec .venv/bin/python scripts/mutants.py "$@"
fi
scripts/setup.sh --system
exec .venv/bin/python -m pytest -q --durations=12 "$@"
