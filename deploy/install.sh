#!/usr/bin/env bash
# Create .venv at the repository root (if missing) and install lensdask into it, editable,
# with the extras named in $1 (e.g. "test" or "test,nn"; "" for none). The one install
# recipe: the README commands, CI and the Docker images all call this script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
stamp="$root/.venv/.lensdask-installed-${extras:-core}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
