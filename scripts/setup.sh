#!/usr/bin/env bash
# Installs everything MLab needs on a fresh Debian 12 machine (as root): Debian packages and
# the project virtualenv (.venv). With --tests also what only the tests need: each area's
# extra steps (scripts/setup.d/*.sh, run in name order: network-config-analyzer, the
# one-node Kubernetes programs built from pinned Go modules, Keycloak), which take minutes
# on a brand-new machine and which `mlab up` does not use. The HomePod image builds in the
# background meanwhile. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
case "${1:-}" in
  --tests) tests=1 ;;
  "") ;;
  *) echo "setup: unknown option '$1' (use --tests to install what the tests need too)" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
# Progress on stderr with the seconds since setup started (where a new machine's first
# start spends its time: benchmarks/bench_fresh_machine.py prints these lines).
say() { echo "setup: [${SECONDS}s] $*" >&2; }
# The packages of the lists named, '#' comments left out.
packages() { cat "$@" | sed 's/#.*//' | xargs; }
# Prints the packages of $@ not installed yet (dpkg-query prints nothing for a package it
# does not know: those count as missing too).
missing() {
  local p have
  have=" $(dpkg-query -W -f='${db:Status-Status} ${Package}\n' "$@" 2>/dev/null \
    | awk '$1=="installed"{printf "%s ", $2}')"
  for p in "$@"; do
    [[ "$have" == *" $p "* ]] || echo "$p"
  done | xargs
}
# Two rounds (issue 18, a new machine's first start): what the HomePod image build needs,
# while pip fills the venv; then the rest, while the image builds.
image_pkgs=$(missing $(packages scripts/apt-packages-image.txt))
lists=scripts/apt-packages.txt
[ "$tests" = 1 ] && lists="$lists scripts/apt-packages-tests.txt"
rest_pkgs=$(missing $(packages $lists))
apt_pid=
apt_log=
# apt-get install of $@ in the background (finish_apt waits for it).
start_apt() {
  apt_log=$(mktemp -t mlab-setup-apt.XXXXXX)
  apt-get install -y -qq --no-install-recommends "$@" >"$apt_log" 2>&1 &
  apt_pid=$!
}
finish_apt() {
  [ -n "$apt_pid" ] || return 0
  if ! wait "$apt_pid"; then
    tail -20 "$apt_log" >&2
    echo "setup: apt-get install failed (above); run again once the cause is fixed" >&2
    exit 1
  fi
  apt_pid=
  rm -f "$apt_log"
}
if [ -n "$image_pkgs$rest_pkgs" ]; then
  say "installing Debian packages"
  apt-get update -qq
  # The virtualenv needs python3-venv only.
  [ -z "$(missing python3-venv)" ] \
    || apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  [ -z "$image_pkgs" ] || start_apt $image_pkgs
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# MLab and its runtime dependencies first: enough for the image build to start (below).
.venv/bin/pip install -q --disable-pip-version-check -e .
say "virtualenv ready"
finish_apt
[ -z "$image_pkgs" ] || say "the image build's Debian packages are in"
[ -z "$rest_pkgs" ] || start_apt $rest_pkgs

# The HomePod image `mlab up` runs (minutes on a brand-new machine, mostly mmdebstrap: dpkg
# and disk, little network) builds in the background while the steps below compile and
# download (issue 18); a no-op when the image of this recipe and source exists.
# MLAB_SETUP_IMAGE=0 skips it (`mlab up` builds it then).
image_pid=
image_log=
if [ "${MLAB_SETUP_IMAGE:-1}" != 0 ]; then
  image_log=$(mktemp -t mlab-setup-image.XXXXXX)
  .venv/bin/mlab image build --local -q >"$image_log" 2>&1 &
  image_pid=$!
  say "building the HomePod image in the background (log: $image_log)"
fi
finish_image() {
  [ -n "$image_pid" ] || return 0
  if kill -0 "$image_pid" 2>/dev/null; then
    # In the foreground this waits on the build's lock and shows its progress.
    .venv/bin/mlab image build --local >/dev/null || true
  fi
  if wait "$image_pid"; then
    say "HomePod image $(tail -1 "$image_log")"
    rm -f "$image_log"
  else
    echo "setup: WARNING: the HomePod image build failed; \`mlab up\` tries again (log: $image_log)" >&2
  fi
}

# The extras install while the image builds: without --tests only mypy (mypyc compiles the
# YAML emitter below, part of the command); with --tests the whole test and node extras.
# Their requirements are read from pyproject.toml and installed by name, so pip does not
# reinstall MLab itself under the running build.
readarray -t extras < <(.venv/bin/python - "$tests" <<'PY'
import sys, tomllib
from packaging.requirements import Requirement
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
reqs = [r for name in ("test", "node") for r in extras[name]]
if sys.argv[1] != "1":
    reqs = [r for r in reqs if Requirement(r).name == "mypy"]
print("\n".join(dict.fromkeys(reqs)))
PY
)
.venv/bin/pip install -q --disable-pip-version-check "${extras[@]}"
say "the extras are in (${#extras[@]} requirements)"

finish_apt  # the rest of the Debian packages: gcc and the headers for the steps below
[ -z "$rest_pkgs" ] || say "the Debian packages are in"
# Part of the command itself (mlab render's YAML writer and site loader), so run without
# --tests too.
bash scripts/setup.d/10-compiled-emitter.sh
bash scripts/setup.d/11-compiled-loader.sh

if [ "$tests" = 1 ]; then
  for step in scripts/setup.d/*.sh; do
    [ -e "$step" ] || continue
    say "$step"
    bash "$step"
  done
fi
finish_image
if [ "$tests" = 1 ]; then
  say "done"
else
  say "done (bash scripts/setup.sh --tests adds what the tests need)"
fi
