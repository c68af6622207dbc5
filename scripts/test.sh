#!/usr/bin/env bash
# Set up everything the tests need, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --system
exec .venv/bin/python -m pytest -q "$@"
