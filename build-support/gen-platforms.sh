#!/usr/bin/env bash
# Regenerate the --complete-platform files build.sh targets (committed, so builds need none of
# these interpreters). Each file is `pex3 interpreter inspect --markers --tags` of one CPython.
#
# Why three: 3.11.7 and 3.12.1 are the supported runtimes; 3.11.2 is Debian 12's /usr/bin/python3.11.
# It shares 3.11.7's wheel tags, but redis needs async-timeout on python_full_version < 3.11.3,
# so without it the pex would refuse to boot on a stock Debian 12 python3.11.
#
# Usage: build-support/gen-platforms.sh [PYTHON...]
#   default: $(pyenv root)/versions/{3.11.7,3.12.1}/bin/python3 and /usr/bin/python3.11
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=build-support/bootstrap.sh
source build-support/bootstrap.sh
tq_find_pex
pex3=("${TQ_PEX[@]}")
# pex3 lives beside pex; `python3 -m pex.cli` is its module form.
if [[ "${pex3[0]}" == */pex ]]; then pex3=("${pex3[0]}3"); else pex3=(python3 -m pex.cli); fi

if (($#)); then
  pythons=("$@")
else
  pyroot="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  pythons=("$pyroot/versions/3.11.7/bin/python3" "$pyroot/versions/3.12.1/bin/python3" /usr/bin/python3.11)
fi
mkdir -p build-support/platforms
for py in "${pythons[@]}"; do
  ver="$("$py" -c 'import platform; print(platform.python_version())')"
  arch="$("$py" -c 'import sysconfig; print(sysconfig.get_platform().replace("-", "_"))')"
  out="build-support/platforms/${arch}-cpython-${ver}.json"
  "${pex3[@]}" interpreter inspect --python "$py" --markers --tags -i 2 -o "$out"
  tq_log "wrote $out"
done
