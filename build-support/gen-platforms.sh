#!/usr/bin/env bash
# Regenerate the --complete-platform files build.sh targets (committed, so builds need none of
# these interpreters). Each file is `pex3 interpreter inspect --markers --tags` of one CPython, or,
# for a CPython no machine here has, derived from an inspected one (build-support/derive_platform.py).
#
# Why these: 3.11.7, 3.12.1 and 3.13.0 (pyenv's) are inspected; 3.14.0 is derived from 3.13.0 (no
# 3.14 to inspect; every wheel of requirements.lock exists for it, the build fails otherwise). 3.11.2 is
# Debian 12's /usr/bin/python3.11: it shares 3.11.7's wheel tags, but redis needs async-timeout on
# python_full_version < 3.11.3, so without it the pex would refuse to boot on a stock Debian 12 python3.11.
#
# Usage: build-support/gen-platforms.sh [PYTHON...]
#          default: $(pyenv root)/versions/{3.11.7,3.12.1,3.13.0}/bin/python3 and /usr/bin/python3.11
#        build-support/gen-platforms.sh --derive VERSION [FROM.json]
#          default FROM: the newest inspected file in build-support/platforms/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=build-support/bootstrap.sh
source build-support/bootstrap.sh
mkdir -p build-support/platforms

if [[ "${1:-}" == --derive ]]; then
  version="${2:?usage: $0 --derive VERSION [FROM.json]}"
  from="${3:-}"
  if [[ -z "$from" ]]; then
    for f in build-support/platforms/*.json; do  # glob order is version order here (3.11.2 … 3.13.0)
      grep -q '"path": "derived' "$f" || from="$f"
    done
  fi
  out="build-support/platforms/linux_x86_64-cpython-${version}.json"
  tq_ensure_venv  # derive_platform.py uses packaging, from requirements-dev.lock
  "$TQ_VENV/bin/python" build-support/derive_platform.py "$version" "$from" "$out"
  tq_log "wrote $out (derived from $from)"
  exit 0
fi

tq_find_pex
pex3=("${TQ_PEX[@]}")
# pex3 lives beside pex; `python3 -m pex.cli` is its module form.
if [[ "${pex3[0]}" == */pex ]]; then pex3=("${pex3[0]}3"); else pex3=(python3 -m pex.cli); fi

if (($#)); then
  pythons=("$@")
else
  pyroot="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  pythons=("$pyroot"/versions/{3.11.7,3.12.1,3.13.0}/bin/python3 /usr/bin/python3.11)
fi
for py in "${pythons[@]}"; do
  ver="$("$py" -c 'import platform; print(platform.python_version())')"
  arch="$("$py" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_"))')"
  out="build-support/platforms/${arch}-cpython-${ver}.json"
  "${pex3[@]}" interpreter inspect --python "$py" --markers --tags -i 2 -o "$out"
  tq_log "wrote $out"
done
