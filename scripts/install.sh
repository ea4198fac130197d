#!/usr/bin/env bash
# Install medclass with the tested versions (requirements/constraints.txt) into a virtual environment.
# Usage: source scripts/install.sh [EXTRAS]     e.g. "source scripts/install.sh dev"
# Uses the active virtual environment if there is one, otherwise creates/uses ./.venv (MEDCLASS_VENV to change).
# torch is pinned to 2.13.0 (the CPU wheel on the project machines); drop the pin for a CUDA build.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${1:-}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    _venv="${MEDCLASS_VENV:-$_root/.venv}"
    [ -x "$_venv/bin/python" ] || python3 -m venv "$_venv" || return 1 2>/dev/null || exit 1
    # shellcheck disable=SC1091
    . "$_venv/bin/activate"
fi
_spec="$_root"
[ -n "$_extras" ] && _spec="$_root[$_extras]"
python -m pip install --quiet --disable-pip-version-check -c "$_root/requirements/constraints.txt" -e "$_spec" \
    || { echo "medclass install failed" >&2; return 1 2>/dev/null || exit 1; }
echo "medclass installed in $(python -c 'import sys; print(sys.prefix)')"
