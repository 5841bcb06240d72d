#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the end-to-end demo (about 10 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/learngene demo "$@"
