#!/usr/bin/env bash
# Before a release: prove that the version floors in requirements*.txt are true.
#
#   tools/check_versions.sh            # both environments below, then a table
#   tools/check_versions.sh floor      # just one of them
#
# It builds two virtual environments and runs, in each, the test suite and a 20-second
# `train.py` followed by `generate.py`:
#   floor   the lowest Python the README promises, with every requirement at its floor (its ">=" version)
#   newest  the newest Python, with the newest release of every requirement
# PyPI's Linux torch wheels bring the CUDA packages, a few GB, so this is a script to run before a
# release, not part of every CI run. The environments are kept in $VERSIONS_DIR (default
# /tmp/minigpt-versions) and reused until a requirements file changes. BUILD_ONLY=1 only builds them.
set -uo pipefail
cd "$(dirname "$0")/.."

FLOOR_PYTHON=${FLOOR_PYTHON:-3.9}
NEWEST_PYTHON=${NEWEST_PYTHON:-3.13}
VERSIONS_DIR=${VERSIONS_DIR:-/tmp/minigpt-versions}
mkdir -p "$VERSIONS_DIR"

find_python() {  # a working python3.X: pyenv's newest 3.X.* if pyenv has one, else python3.X on PATH
  local version=$1 found=""
  if command -v pyenv >/dev/null 2>&1; then
    found=$(ls -d "$(pyenv root)"/versions/"$version".*/bin/python3 2>/dev/null | sort -V | tail -1)
  fi
  [ -n "$found" ] || found=$(command -v "python$version" 2>/dev/null)
  if [ -z "$found" ] || ! "$found" -c pass 2>/dev/null; then
    echo "error: no working Python $version found (install it, or set FLOOR_PYTHON / NEWEST_PYTHON)" >&2
    return 2
  fi
  echo "$found"
}

floors() {  # every "name>=version" of the requirements files, as "name==version"
  grep -hoE '^[A-Za-z0-9_.-]+>=[0-9][^ ,;#]*' requirements*.txt | sed 's/>=/==/' | sort -u
}

build() {  # build KIND PYTHON: a venv with the requirements, at their floors or newest
  local kind=$1 python=$2 venv="$VERSIONS_DIR/$1" wanted
  wanted=$(cat requirements*.txt | sha1sum | cut -c1-16)  # rebuilt when a requirements file changes
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.installed" 2>/dev/null)" != "$wanted" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --upgrade pip || return 1
    if [ "$kind" = floor ]; then
      floors > "$venv/floors.txt"
      "$venv/bin/python" -m pip install -q -r requirements-dev.txt -c "$venv/floors.txt" || return 1
    else  # the newest releases: no machine-wide cap either
      PIP_CONSTRAINT=/dev/null "$venv/bin/python" -m pip install -q --upgrade -r requirements-dev.txt || return 1
    fi
    echo "$wanted" > "$venv/.installed"
  fi
}

check() {  # check KIND: the suite, then a short train + generate; one row of the table
  local kind=$1 venv="$VERSIONS_DIR/$1" python_version torch_version suite train work
  python_version=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
  torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
  echo "== $kind: Python $python_version, torch $torch_version" >&2
  "$venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(torch|numpy|matplotlib|tqdm|pytest|pytest-xdist|openai|selenium|babel|fastapi|uvicorn|transformers|tokenizers|safetensors)==' | tr '\n' ' ' >&2; echo >&2
  "$venv/bin/python" -m pytest -q -p no:cacheprovider > "$VERSIONS_DIR/$kind-suite.log" 2>&1
  suite="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$VERSIONS_DIR/$kind-suite.log" | tail -1 | tr -d '=' | xargs)"
  work=$(mktemp -d)
  if "$venv/bin/python" train.py --time_budget 20 --out_dir "$work/out" > "$VERSIONS_DIR/$kind-train.log" 2>&1 \
     && "$venv/bin/python" generate.py --checkpoint "$work/out/ckpt.pt" --max_new_tokens 100 >> "$VERSIONS_DIR/$kind-train.log" 2>&1; then
    train="ok ($(grep -oE 'done: [0-9,]+ steps' "$VERSIONS_DIR/$kind-train.log" | head -1 | cut -d' ' -f2) steps, $(grep -oE '[0-9.]+ on the whole validation split' "$VERSIONS_DIR/$kind-train.log" | cut -d' ' -f1) whole-split val)"
  else
    train="FAILED (see $VERSIONS_DIR/$kind-train.log)"
  fi
  rm -rf "$work"
  echo "| $kind | $python_version | $torch_version | ${suite:-no result (see $VERSIONS_DIR/$kind-suite.log)} | $train |"
}

kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(floor newest)
rows=()
status=0
for kind in "${kinds[@]}"; do
  case $kind in
    floor) python=$(find_python "$FLOOR_PYTHON") || exit 2 ;;
    newest) python=$(find_python "$NEWEST_PYTHON") || exit 2 ;;
    *) echo "error: unknown environment '$kind'; use floor or newest" >&2; exit 2 ;;
  esac
  if ! build "$kind" "$python"; then
    rows+=("| $kind | $("$python" -c 'import platform; print(platform.python_version())') | | install FAILED | |")
    status=1
    continue
  fi
  [ "${BUILD_ONLY:-0}" = 1 ] && { echo "built $VERSIONS_DIR/$kind" >&2; continue; }
  row=$(check "$kind")
  rows+=("$row")
  case $row in *FAILED*|*failed*|*"no result"*) status=1 ;; esac
done
echo
echo "| environment | Python | torch | suite | train.py --time_budget 20 + generate.py |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $status
