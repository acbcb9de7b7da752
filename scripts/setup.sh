#!/usr/bin/env bash
# Installs everything MLab needs on a fresh Debian 12 machine (as root): Debian packages and
# the project virtualenv (.venv). With --tests also what only the tests need: each area's
# extra steps (scripts/setup.d/*.sh, run in name order: network-config-analyzer, the
# one-node Kubernetes programs built from pinned Go modules, Keycloak), which take minutes
# on a brand-new machine and which `mlab up` does not use. Safe to run again: it only adds
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
case "${1:-}" in
  --tests) tests=1 ;;
  "") ;;
  *) echo "setup: unknown option '$1' (use --tests to install what the tests need too)" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
pkgs=$(cat scripts/apt-packages.txt | sed 's/#.*//' | xargs)
missing=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | awk '$4!="installed"{print $1}' || true)
# dpkg-query prints nothing for unknown packages: compare counts too.
known=$(dpkg-query -W -f='${Package} ${Status}\n' $pkgs 2>/dev/null | awk '$4=="installed"' | wc -l || true)
if [ -n "$missing" ] || [ "$known" -lt "$(echo $pkgs | wc -w)" ]; then
  echo "setup: installing Debian packages" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,node]'
# Part of the command itself (mlab render's YAML writer), so run without --tests too.
bash scripts/setup.d/10-compiled-emitter.sh

[ "$tests" = 1 ] || { echo "setup: done (bash scripts/setup.sh --tests adds what the tests need)" >&2; exit 0; }
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "setup: $step" >&2
  bash "$step"
done
echo "setup: done" >&2
