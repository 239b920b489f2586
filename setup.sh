#!/usr/bin/env bash
# Set up this project on a Debian machine, as root or as a user with sudo:
#
#   bash setup.sh            what `dvc repro` needs: git, the Fashion-MNIST data package, the project
#   bash setup.sh --tests    what `pytest` needs: git, chromium (the plots-page test), the project and pytest
#
# Debian packages are installed only when something is missing, after one `apt-get update`. The
# Python packages go into the Python that `python3` runs: a venv, conda env or pyenv version of
# Python 3.11 (Debian's own Python refuses pip installs, PEP 668, so the script stops there).
set -euo pipefail
cd "$(dirname "$0")"

# Where Debian's dataset-fashion-mnist puts the files; params.yaml's fetch.search_dirs looks here first.
DATA_DIR=/usr/share/datasets/fashion-mnist
DATA_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

fail() {
    echo "setup.sh: $*" >&2
    exit 1
}

case "${1:-}" in
    "") tests=false ;;
    --tests) tests=true ;;
    *) echo "usage: bash setup.sh [--tests]" >&2; exit 2 ;;
esac

# Check the Python first, to say what to do instead of pip's page of text after a wasted apt run.
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || fail "needs Python 3.11, python3 is $(python3 --version 2>&1); activate a venv, conda env or pyenv version of 3.11"
python3 - << 'EOF' || fail "python3 is the system's Python, which pip must not change (PEP 668); make and activate a venv, then run this again: python3 -m venv .venv && . .venv/bin/activate"
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
sys.exit(not in_venv and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))
EOF

# Debian packages the chosen set-up needs and this machine lacks.
missing=()
command -v git > /dev/null || missing+=(git)
if $tests; then
    command -v chromium > /dev/null || missing+=(chromium)
else
    for file in "${DATA_FILES[@]}"; do
        if [[ ! -f "$DATA_DIR/$file" ]]; then
            missing+=(dataset-fashion-mnist)
            break
        fi
    done
fi

if (( ${#missing[@]} )); then
    if (( EUID == 0 )); then
        as_root=()
    elif command -v sudo > /dev/null; then
        as_root=(sudo)
    else
        fail "installing ${missing[*]} needs root or sudo; install them, then run this again"
    fi
    command -v apt-get > /dev/null || fail "apt-get not found; install ${missing[*]}, then run this again"
    echo "Installing ${missing[*]} with apt-get"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi

if $tests; then
    python3 -m pip install -e '.[test]'
else
    python3 -m pip install -e .
fi
