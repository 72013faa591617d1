#!/usr/bin/env bash
# Build KenLM's `lmplz` and `build_binary` (needed only to *build* character LMs with
# scripts/build_char_lm.py; decoding uses the `kenlm` Python module) from the kenlm source
# distribution on PyPI, into PREFIX/bin. Does nothing when both binaries are already there.
#
#   scripts/build_lmplz.sh [PREFIX]        # default PREFIX: build/kenlm
#
# Needs cmake, a C++ compiler and the Boost/compression dev packages below; when they are
# missing it installs them with apt-get if it can (root or passwordless sudo), else it
# prints the apt-get command and stops. Env: PYTHON (default .venv/bin/python),
# KENLM_VERSION (default: the installed kenlm module's version, else 0.3.0), JOBS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${1:-build/kenlm}"
PYTHON="${PYTHON:-.venv/bin/python}"
JOBS="${JOBS:-2}"
if [[ -z "${KENLM_VERSION:-}" ]]; then
  KENLM_VERSION="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("kenlm"))' 2>/dev/null || echo 0.3.0)"
fi

if [[ -x "$PREFIX/bin/lmplz" && -x "$PREFIX/bin/build_binary" ]]; then
  echo "lmplz and build_binary already built in $PREFIX/bin"
  exit 0
fi

packages=(cmake g++ make libboost-program-options-dev libboost-system-dev
  libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null && [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
  else
    echo "error: building lmplz needs these packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "installing ${missing[*]} with apt-get"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

src="$PREFIX/src"
tree="$src/kenlm-$KENLM_VERSION"
mkdir -p "$src"
if [[ ! -f "$tree/CMakeLists.txt" ]]; then
  echo "downloading the kenlm $KENLM_VERSION source distribution from PyPI"
  "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps --no-build-isolation \
    "kenlm==$KENLM_VERSION" -d "$src"
  tar -xzf "$src/kenlm-$KENLM_VERSION.tar.gz" -C "$src"
fi

cmake -S "$tree" -B "$PREFIX/cmake-build" -DCMAKE_BUILD_TYPE=Release -DCOMPILE_TESTS=OFF >/dev/null
cmake --build "$PREFIX/cmake-build" --target lmplz build_binary -j "$JOBS"
mkdir -p "$PREFIX/bin"
cp "$PREFIX/cmake-build/bin/lmplz" "$PREFIX/cmake-build/bin/build_binary" "$PREFIX/bin/"
echo "built $PREFIX/bin/lmplz and $PREFIX/bin/build_binary"
