# shellcheck shell=bash
# Shared bootstrap for build.sh, test.sh and .ci/run. Source it, don't execute it:
#   source "$(dirname "${BASH_SOURCE[0]}")/build-support/bootstrap.sh"
# It defines functions only (plus TQ_ROOT / TQ_VENV / TQ_MIN_REDIS); callers decide what to run.
#
# Knobs (environment):
#   TQ_PYTHON   interpreter used to create .venv (default: python3; must be >= 3.11)
#   TQ_VENV     venv location (default: $TQ_ROOT/.venv)

TQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TQ_VENV="${TQ_VENV:-$TQ_ROOT/.venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

tq_log() { printf '==> %s\n' "$*" >&2; }
tq_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly if we are root, else via sudo if present.
tq_as_root() {
  if [[ "$(id -u)" == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    tq_die "need root (or sudo) to run: $*"
  fi
}

# The oldest Redis taskqueue runs on: RPOP with a count (exchange.lua) and BLMOVE (the workers' watch) came
# in 6.2. Must equal MIN_VERSION in taskqueue/store/redisboot.py and the README (tests/test_requirements.py).
TQ_MIN_REDIS="6.2.0"

# Install redis-server (and redis-cli) from the distro if not on PATH (Debian/Ubuntu apt only); refuse one
# older than TQ_MIN_REDIS.
tq_ensure_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 \
      || tq_die "redis-server missing and apt-get unavailable; install Redis >= $TQ_MIN_REDIS"
    tq_log "installing redis-server via apt-get"
    tq_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    tq_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
    command -v redis-server >/dev/null 2>&1 || tq_die "redis-server still not on PATH after apt-get install"
  fi
  local found
  found="$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')"
  [[ -n "$found" ]] || tq_die "cannot read the version of $(command -v redis-server)"
  [[ "$(printf '%s\n%s\n' "$TQ_MIN_REDIS" "$found" | sort -V | head -n1)" == "$TQ_MIN_REDIS" ]] \
    || tq_die "redis-server $found is too old: taskqueue needs Redis >= $TQ_MIN_REDIS"
}

# Tools the HTTP end-to-end tests run, installed from the distro when missing (Debian/Ubuntu apt only):
# promtool (package prometheus) checks /metrics; chromium + chromium-driver load the dashboard.
tq_ensure_test_tools() {
  local missing=()
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null 2>&1 || tq_die "missing ${missing[*]} and apt-get unavailable; install them"
  tq_log "installing ${missing[*]} via apt-get"
  tq_as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  tq_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  local tool
  for tool in promtool chromium chromedriver; do
    command -v "$tool" >/dev/null 2>&1 || tq_die "$tool still not on PATH after apt-get install"
  done
}

# The jobs' third-party requirements (optional; see requirements-jobs.txt): TQ_JOBS_REQUIREMENTS names
# another file, and an empty TQ_JOBS_REQUIREMENTS none. Prints the path, or nothing.
tq_jobs_requirements() {
  local file="${TQ_JOBS_REQUIREMENTS-$TQ_ROOT/requirements-jobs.txt}"
  if [[ -n "$file" && -f "$file" ]]; then
    printf '%s\n' "$file"
  elif [[ -n "${TQ_JOBS_REQUIREMENTS:-}" ]]; then
    tq_die "TQ_JOBS_REQUIREMENTS=$TQ_JOBS_REQUIREMENTS: no such file"
  fi
}

# Fingerprint of the lock files; stored in the venv to detect a stale install.
tq_lock_digest() {
  local jobs
  jobs="$(tq_jobs_requirements)"
  cat "$TQ_ROOT/requirements-dev.lock" "$TQ_ROOT/requirements.lock" ${jobs:+"$jobs"} | sha256sum | cut -d' ' -f1
}

# Create $TQ_VENV if missing and (re)install requirements-dev.lock and the jobs' requirements when the
# lock files changed since the last install (or when TQ_FORCE_INSTALL=1).
tq_ensure_venv() {
  local py="${TQ_PYTHON:-python3}" stamp="$TQ_VENV/.tq-dev-lock.sha256" digest jobs
  if [[ ! -x "$TQ_VENV/bin/python" ]]; then
    command -v "$py" >/dev/null 2>&1 || tq_die "$py not found (need CPython >= 3.11)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || tq_die "$py is $("$py" -V 2>&1); taskqueue needs Python >= 3.11 (set TQ_PYTHON)"
    tq_log "creating $TQ_VENV with $("$py" -V 2>&1)"
    "$py" -m venv "$TQ_VENV"
  fi
  digest="$(tq_lock_digest)"
  if [[ "${TQ_FORCE_INSTALL:-0}" == 1 || ! -f "$stamp" || "$(cat "$stamp")" != "$digest" ]]; then
    jobs="$(tq_jobs_requirements)"
    tq_log "installing requirements-dev.lock${jobs:+ and ${jobs##*/}} into $TQ_VENV"
    "$TQ_VENV/bin/python" -m pip install --quiet -r "$TQ_ROOT/requirements-dev.lock" ${jobs:+-r "$jobs"}
    printf '%s\n' "$digest" >"$stamp"
  fi
}

# Put the venv first on PATH (what `source .venv/bin/activate` does, minus the prompt).
tq_activate() {
  export VIRTUAL_ENV="$TQ_VENV"
  export PATH="$TQ_VENV/bin:$PATH"
  unset PYTHONHOME
}

# Sets the array TQ_PEX to a pex command: .venv/bin/pex, else `python3 -m pex`, else bootstraps .venv.
# shellcheck disable=SC2034  # TQ_PEX is read by the scripts that source this file
tq_find_pex() {
  if [[ -x "$TQ_VENV/bin/pex" ]]; then
    TQ_PEX=("$TQ_VENV/bin/pex")
  elif python3 -m pex --version >/dev/null 2>&1; then
    TQ_PEX=(python3 -m pex)
  else
    tq_ensure_venv
    TQ_PEX=("$TQ_VENV/bin/pex")
  fi
}

# CPython interpreters >= 3.11 on this machine, one a line, each real interpreter once (its resolved path):
# python3 and python3.11 ... python3.14 on PATH, /usr/bin's, pyenv's versions, those tq_ensure_extra_pythons
# installed under $TQ_ROOT/.pythons, and TQ_SMOKE_PYTHONS (space-separated paths). An interpreter that
# does not run (a pyenv shim with no version behind it) is skipped.
tq_find_pythons() {
  local candidates=() py real seen=" " pyroot
  for py in python3 python3.11 python3.12 python3.13 python3.14; do
    command -v "$py" >/dev/null 2>&1 && candidates+=("$(command -v "$py")")
  done
  pyroot="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  local nullglob_was; nullglob_was="$(shopt -p nullglob || true)"  # status 1 when off
  shopt -s nullglob
  candidates+=(/usr/bin/python3.1[1-9] "$pyroot"/versions/3.*/bin/python3 "$TQ_ROOT"/.pythons/*/bin/python3)
  eval "$nullglob_was"
  # shellcheck disable=SC2206  # word splitting is the point: a list of paths
  candidates+=(${TQ_SMOKE_PYTHONS:-})
  for py in "${candidates[@]}"; do
    [[ -x "$py" ]] || continue
    real="$("$py" -c 'import os, sys
ok = sys.version_info >= (3, 11) and sys.implementation.name == "cpython"
print(os.path.realpath(sys.executable)) if ok else sys.exit(1)' 2>/dev/null)" || continue
    [[ "$seen" == *" $real "* ]] && continue
    seen+="$real "
    printf '%s\n' "$real"
  done
}

# Optional, for CI: with TQ_EXTRA_PYTHONS="3.12 3.13 3.14", install those CPythons under $TQ_ROOT/.pythons
# with a pinned uv (into its own venv there), so the pex smoke test runs under each. Best effort and
# bounded: without network (uv downloads the interpreters) it warns and the build goes on with the
# interpreters the machine has. A no-op when TQ_EXTRA_PYTHONS is empty (the default).
tq_ensure_extra_pythons() {
  local want="${TQ_EXTRA_PYTHONS:-}" dir="$TQ_ROOT/.pythons"
  [[ -n "$want" ]] || return 0
  tq_log "installing CPython $want under $dir (uv ${TQ_UV_VERSION:-0.13.9})"
  if [[ ! -x "$dir/.uv/bin/uv" ]]; then
    python3 -m venv "$dir/.uv" && timeout 120 "$dir/.uv/bin/python" -m pip install --quiet "uv==${TQ_UV_VERSION:-0.13.9}" \
      || { tq_log "warning: could not install uv; smoke-testing only the interpreters already here"; return 0; }
  fi
  # shellcheck disable=SC2086  # one argument per version
  UV_PYTHON_INSTALL_DIR="$dir" timeout 120 "$dir/.uv/bin/uv" python install --no-bin $want \
    || tq_log "warning: uv python install $want failed (offline?); smoke-testing only the interpreters already here"
}

# Files whose change requires rebuilding taskqueue.pex (NUL-free paths, one per line).
tq_pex_inputs() {
  local jobs
  jobs="$(tq_jobs_requirements)"
  (
    cd "$TQ_ROOT" || exit 1
    find runner.py taskqueue requirements.lock build.sh build-support/platforms build-support/verify_pex.py \
      ${jobs:+"$jobs"} -name __pycache__ -prune -o -type f ! -name '*.pyc' -print 2>/dev/null
  )
}

# True (0) if taskqueue.pex is missing or older than any of its inputs.
tq_pex_stale() {
  local pex="$TQ_ROOT/taskqueue.pex" f
  [[ -f "$pex" ]] || return 0
  while IFS= read -r f; do
    [[ "$f" == /* ]] || f="$TQ_ROOT/$f"
    [[ "$f" -nt "$pex" ]] && return 0
  done < <(tq_pex_inputs)
  return 1
}
