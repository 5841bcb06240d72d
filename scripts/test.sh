#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "learngene is installed in .venv: run 'source .venv/bin/activate' to use the learngene command (or call .venv/bin/learngene)"
exec .venv/bin/python -m pytest -q "$@"
