#!/usr/bin/env bash
# Set up everything learngene-kit needs on a fresh Debian/Ubuntu machine (Python 3.10+):
# a virtual environment in .venv with the package and its test tools, and, when run as
# root with apt available, Debian's Fashion-MNIST package. Safe to run again: it skips
# what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: python3 not found; install it with: sudo apt-get install python3 python3-venv" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup: Python 3.10 or newer is needed, found $("$PYTHON" --version)" >&2
  exit 1
fi

# 1. Data: Fashion-MNIST from Debian's package (30 MB, MIT).
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing dataset-fashion-mnist with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
      || echo "setup: apt-get could not install dataset-fashion-mnist; tests that need it will be skipped" >&2
  else
    echo "setup: Fashion-MNIST is not installed. Get it with: sudo apt-get install dataset-fashion-mnist" >&2
    echo "       (or put the 4 IDX files in \$LEARNGENE_DATA/fashion-mnist, or let torchvision download them online)" >&2
  fi
fi

# 2. Python environment, reinstalled only when pyproject.toml changes.
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || { echo "setup: venv failed; install it with: sudo apt-get install python3-venv" >&2; exit 1; }
fi
STAMP=".venv/.learngene-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "setup: installing learngene-kit and its dependencies into .venv (torch is large: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev,attpc,clip]"  # attpc: the AT-TPC simulator (GPL-3), see README; clip: open_clip + transformers
  rm -f .venv/.learngene-installed-*
  touch "$STAMP"
fi
