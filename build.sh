#!/usr/bin/env bash
# Build ./taskqueue.pex reproducibly from requirements.lock, for CPython 3.11 and 3.12 on linux x86_64.
#
# The pex holds runner.py (entry point runner:main) and the taskqueue package with its data files
# (taskqueue/store/lua/**/*.lua, taskqueue/config/schema/*.json, taskqueue/ops/static/dashboard.html). jobs/ is NOT
# included: user tasks are imported at run time from the folder of the YAML config.
#
# Targets are the committed complete-platform files in build-support/platforms/ (CPython 3.11.7,
# 3.12.1, and Debian 12's 3.11.2, which alone pulls in async-timeout for redis), so no 3.12 is
# needed at build time; regenerate them with build-support/gen-platforms.sh. Short `--platform`
# names can't be used: they lack python_full_version, which redis's async-timeout marker needs.
#
# Usage: ./build.sh            (env: SOURCE_DATE_EPOCH, TQ_PIP_VERSION, TQ_SKIP_SMOKE=1)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=build-support/bootstrap.sh
source build-support/bootstrap.sh

OUT="$TQ_ROOT/taskqueue.pex"
PIP_VERSION="${TQ_PIP_VERSION:-26.2.1}"   # must be one pex knows (`pex --help`); `latest` is not stable
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"   # 1980-01-01T00:00:00Z, the zip epoch
export PYTHONHASHSEED=0

[[ -f runner.py && -f taskqueue/__init__.py ]] || tq_die "runner.py / taskqueue/ not found in $TQ_ROOT"
shopt -s nullglob
platforms=(build-support/platforms/*.json)
shopt -u nullglob
((${#platforms[@]})) || tq_die "no complete-platform JSON files in build-support/platforms/"

tq_find_pex
tq_log "pex: ${TQ_PEX[*]} ($("${TQ_PEX[@]}" --version))"

work="$(mktemp -d "${TMPDIR:-/tmp}/taskqueue-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Stage exactly what goes into the pex: runner.py + taskqueue/ (no caches, no jobs/).
stage="$work/src"
mkdir -p "$stage"
tar -cf - --exclude=__pycache__ --exclude='*.py[co]' --exclude='.*' --exclude='*~' runner.py taskqueue \
  | tar -xf - -C "$stage"

platform_args=()
for p in "${platforms[@]}"; do platform_args+=(--complete-platform "$p"); done

tq_log "building taskqueue.pex (pip $PIP_VERSION; targets: ${platforms[*]##*/})"
"${TQ_PEX[@]}" \
  -r requirements.lock \
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
  -o "$work/taskqueue.pex" >/dev/null
mv -f "$work/taskqueue.pex" "$OUT"

# Check the artifact: pinned dists only, no jobs/, every data file readable via importlib.resources.
tq_log "verifying contents"
find taskqueue \( -name '*.lua' -path '*/lua/*' -o -name '*.json' -path '*/schema/*' -o -path '*/static/*' \) -type f \
  | LC_ALL=C sort >"$work/data-files"
python3 - "$OUT" requirements.lock <<'PY'
import json, re, sys, zipfile

pex, lock = sys.argv[1:3]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pins = {}
for line in open(lock):
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
    if m:
        pins[norm(m.group(1))] = m.group(2)
with zipfile.ZipFile(pex) as z:
    info = json.loads(z.read("PEX-INFO"))
    names = z.namelist()
bad = []
for whl in info["distributions"]:
    name, version = whl.split("-")[:2]
    if pins.get(norm(name)) != version:
        bad.append(whl)
if bad:
    sys.exit(f"dists not pinned in {lock}: {bad}")
if any(n.startswith("jobs/") for n in names):
    sys.exit("jobs/ must not be packaged into the pex")
print(f"  {len(info['distributions'])} wheels (all match {lock})")
PY
PEX_INTERPRETER=1 "$OUT" - "$work/data-files" <<'PY'
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
  tq_log "smoke test: ./taskqueue.pex validate -c task-queue.yaml"
  ./taskqueue.pex validate -c task-queue.yaml
fi

size_bytes=$(stat -c %s "$OUT")
tq_log "built $OUT: $((size_bytes / 1024)) KiB ($size_bytes bytes), sha256 $(sha256sum "$OUT" | cut -d' ' -f1)"
