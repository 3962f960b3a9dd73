#!/usr/bin/env bash
# Install everything ennas-bench needs on a fresh machine (Python >= 3.11, pip; apt as root or with sudo for the
# embedded dataset). Idempotent: a second run only checks. Creates .venv beside this file, at the versions in
# constraints.txt (the ones CI tested).
set -euo pipefail
cd "$(dirname "$0")"

# Python first, before anything is installed: $PYTHON, else python3.11, else python3.
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif command -v python3.11 >/dev/null; then
  PY=python3.11
else
  PY=python3
fi
VERSION=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || VERSION=""
if [[ ! $VERSION =~ ^([0-9]+)\.([0-9]+)$ ]] ||
  ((BASH_REMATCH[1] < 3 || (BASH_REMATCH[1] == 3 && BASH_REMATCH[2] < 11))); then
  echo "error: ennas-bench needs Python >= 3.11, but $PY is ${VERSION:+Python }${VERSION:-not runnable}:" \
    "install python3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# The embedded dataset comes from Debian's package; without apt, runs read the same IDX files from --data DIR.
FASHION_MNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION_MNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
  else
    echo "note: no apt-get, so the embedded Fashion-MNIST dataset is not installed in $FASHION_MNIST;" \
      "pass --data DIR, a folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz," \
      "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
