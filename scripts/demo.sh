#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the end-to-end demo: 3 min 48 s measured on 2 CPU cores with
# the set-up's packages already downloaded (README, "The demo"); a first set-up also downloads and
# installs about 6.5 GB (mostly torch), at your network's speed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/learngene demo "$@"
echo "learngene is installed in .venv: run 'source .venv/bin/activate' to use the learngene command (or call .venv/bin/learngene)"
