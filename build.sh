#!/usr/bin/env bash
# Build ./taskqueue.pex reproducibly from requirements.lock: one file for CPython 3.11, 3.12, 3.13 and 3.14
# on linux x86_64 (it carries the wheels of each).
#
# The pex holds runner.py (entry point runner:main) and the taskqueue package with its data files
# (taskqueue/store/lua/**/*.lua, taskqueue/config/schema/*.json, taskqueue/ops/static/dashboard.html). jobs/ is NOT
# included: user tasks are imported at run time from the folder of the YAML config. The third-party packages
# they import are: requirements-jobs.txt (optional; exact pins, dependencies too, none contradicting
# requirements.lock) is resolved together with requirements.lock and bundled, so workers import them.
#
# Targets are the committed complete-platform files in build-support/platforms/ (CPython 3.11.7, 3.12.1,
# 3.13.0, 3.14.0, and Debian 12's 3.11.2, which alone pulls in async-timeout for redis), so none of these
# interpreters is needed at build time; regenerate them with build-support/gen-platforms.sh (3.14.0 is
# derived from 3.13.0's: no 3.14 here to inspect). Short `--platform` names can't be used: they lack
# python_full_version, which redis's async-timeout marker needs, and the pex's shell boot would try them
# first (it tries target interpreters in the order short platforms, then complete ones).
#
# The smoke test runs the pex under every CPython >= 3.11 found here (tq_find_pythons) and fails if one of
# them re-executes under another interpreter instead of running it.
#
# The new pex is built and checked in a temporary directory, and replaces taskqueue.pex only once every check
# passed: a failed build leaves the previous pex as it was.
#
# Usage: ./build.sh            (env: SOURCE_DATE_EPOCH, TQ_PIP_VERSION, TQ_SKIP_SMOKE=1,
#                               TQ_JOBS_REQUIREMENTS=FILE instead of requirements-jobs.txt, or empty for none,
#                               TQ_PEX_OUT=FILE instead of ./taskqueue.pex,
#                               TQ_PREBUILT_PEX=FILE: check and install FILE instead of building one)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=build-support/bootstrap.sh
source build-support/bootstrap.sh

OUT="${TQ_PEX_OUT:-$TQ_ROOT/taskqueue.pex}"
PIP_VERSION="${TQ_PIP_VERSION:-26.2.1}"   # must be one pex knows (`pex --help`); `latest` is not stable
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"   # 1980-01-01T00:00:00Z, the zip epoch
export PYTHONHASHSEED=0

[[ -f runner.py && -f taskqueue/__init__.py ]] || tq_die "runner.py / taskqueue/ not found in $TQ_ROOT"
shopt -s nullglob
platforms=(build-support/platforms/*.json)
shopt -u nullglob
((${#platforms[@]})) || tq_die "no complete-platform JSON files in build-support/platforms/"

locks=(requirements.lock)
jobs_requirements="$(tq_jobs_requirements)"
if [[ -n "$jobs_requirements" ]]; then
  tq_log "jobs' requirements: $jobs_requirements"
  python3 build-support/verify_pex.py requirements "$jobs_requirements" requirements.lock
  locks+=("$jobs_requirements")
fi
requirement_args=()
for lock in "${locks[@]}"; do requirement_args+=(-r "$lock"); done

work="$(mktemp -d "${TMPDIR:-/tmp}/taskqueue-build.XXXXXX")"
trap 'rm -rf "$work" "$OUT.partial"' EXIT
new="$work/taskqueue.pex"   # becomes $OUT only after every check below passed

build_pex() {
  tq_find_pex
  tq_log "pex: ${TQ_PEX[*]} ($("${TQ_PEX[@]}" --version))"

  # Stage exactly what goes into the pex: runner.py + taskqueue/ (no caches, no jobs/).
  stage="$work/src"
  mkdir -p "$stage"
  tar -cf - --exclude=__pycache__ --exclude='*.py[co]' --exclude='.*' --exclude='*~' runner.py taskqueue \
    | tar -xf - -C "$stage"

  platform_args=()
  for p in "${platforms[@]}"; do platform_args+=(--complete-platform "$p"); done

  tq_log "building taskqueue.pex (pip $PIP_VERSION; targets: ${platforms[*]##*/})"
  "${TQ_PEX[@]}" \
    "${requirement_args[@]}" \
    -D "$stage" \
    -e runner:main \
    --venv \
    --sh-boot \
    --no-strip-pex-env \
    --pip-version "$PIP_VERSION" \
    --no-allow-pip-version-fallback \
    "${platform_args[@]}" \
    --no-use-system-time \
    --no-compile \
    --no-emit-warnings \
    -o "$new" >/dev/null
}

if [[ -n "${TQ_PREBUILT_PEX:-}" ]]; then  # the checks alone, on a given file (tests/test_build_checks.py)
  tq_log "checking $TQ_PREBUILT_PEX instead of building one (TQ_PREBUILT_PEX)"
  cp "$TQ_PREBUILT_PEX" "$new"
else
  build_pex
fi

# Check the artifact: pinned dists only, no jobs/, every data file readable via importlib.resources.
tq_log "verifying contents"
find taskqueue \( -name '*.lua' -path '*/lua/*' -o -name '*.json' -path '*/schema/*' -o -path '*/static/*' \) -type f \
  | LC_ALL=C sort >"$work/data-files"
python3 build-support/verify_pex.py pex "$new" build-support/platforms "${locks[@]}"
PEX_INTERPRETER=1 "$new" - "$work/data-files" <<'PY'
import sys
from importlib import resources

expected = [line.strip() for line in open(sys.argv[1]) if line.strip()]
root = resources.files("taskqueue")
for rel in expected:
    data = root.joinpath(*rel.split("/")[1:]).read_bytes()
    if not data:
        sys.exit(f"{rel}: empty inside the pex")
print(f"  {len(expected)} data files readable via importlib.resources")
PY

if [[ "${TQ_SKIP_SMOKE:-0}" != 1 ]]; then
  tq_log "smoke test: taskqueue.pex validate -c task-queue.yaml"
  "$new" validate -c task-queue.yaml
  tested=()
  mapfile -t pythons < <(tq_find_pythons)
  for py in "${pythons[@]}"; do
    want="$("$py" -c 'import platform; print(platform.python_version())')"
    tq_log "smoke test: $py taskqueue.pex --version / validate"
    got="$("$py" "$new" --version)"
    [[ "$got" == *"(Python $want)" ]] || tq_die "under $py ($want) the pex ran another interpreter: $got"
    [[ "$("$py" "$new" validate -c task-queue.yaml)" == OK ]] || tq_die "validate failed under $py"
    tested+=("$want")
  done
  ((${#tested[@]})) || tq_die "smoke test: no CPython >= 3.11 found (tq_find_pythons)"
  tq_log "smoke-tested under CPython ${tested[*]} (every one found here; TQ_SMOKE_PYTHONS adds more)"
fi

# Every check passed: replace the old pex in one rename (a copy beside it first: $work may be another filesystem).
cp "$new" "$OUT.partial"
mv -f "$OUT.partial" "$OUT"
size_bytes=$(stat -c %s "$OUT")
tq_log "built $OUT: $((size_bytes / 1024)) KiB ($size_bytes bytes), sha256 $(sha256sum "$OUT" | cut -d' ' -f1)"
