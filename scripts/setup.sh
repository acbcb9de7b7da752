#!/usr/bin/env bash
# Installs everything MLab and its tests need on a fresh Debian 12 machine (as root):
# Debian packages, the project virtualenv (.venv) and each area's extra steps
# (scripts/setup.d/*.sh, run in name order). Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

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

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  echo "setup: $step" >&2
  bash "$step"
done
echo "setup: done" >&2
