#!/usr/bin/env bash
# THE test command: ./test.sh [pytest args...]
# Bootstraps .venv from requirements-dev.lock if needed, (re)builds taskqueue.pex when missing or
# older than any of its inputs, then runs ruff (lint + format check), mypy --strict and pytest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=build-support/bootstrap.sh
source build-support/bootstrap.sh

tq_ensure_venv
tq_activate

if tq_pex_stale; then
  tq_log "taskqueue.pex missing or out of date: running ./build.sh"
  ./build.sh
fi

tq_log "ruff check"
ruff check .
tq_log "ruff format --check"
ruff format --check .

mypy_targets=()
for t in taskqueue runner.py jobs tests bench build-support; do
  # only paths holding Python files: mypy rejects an existing but empty directory
  [[ -e "$t" && -n "$(find "$t" -name '*.py' -print -quit)" ]] && mypy_targets+=("$t")
done
tq_log "mypy --strict ${mypy_targets[*]}"
mypy --strict "${mypy_targets[@]}"

tq_log "pytest $*"
exec python -m pytest "$@"
