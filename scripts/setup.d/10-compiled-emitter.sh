#!/usr/bin/env bash
# The YAML emitter's core (src/mlab/render/emit.py) compiled with mypyc into the project
# virtualenv as the module `mlab_emitc`, stamped with the sha256 of the source it was built
# from: mlab.render.dump uses it only while the stamp matches (else the same code,
# interpreted). About half the time of `mlab render` on a 10,000-user site (issue 18).
# Idempotent: does nothing when the installed module's stamp matches the source.
# setup.sh runs it without --tests too: it is part of the command, not of the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
src=src/mlab/render/emit.py
sum=$(sha256sum "$src" | cut -d' ' -f1)
if [ "$($PY -c 'import mlab_emitc; print(mlab_emitc.SOURCE_SHA256)' 2>/dev/null)" = "$sum" ]; then
  exit 0
fi
dest=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{ cat "$src"; printf '\n\nSOURCE_SHA256 = "%s"\n' "$sum"; } > "$work/mlab_emitc.py"
# mypyc needs the C compiler of scripts/apt-packages.txt (gcc) and Python's headers.
(cd "$work" && "$OLDPWD/$PY" -m mypyc --ignore-missing-imports mlab_emitc.py >build.log 2>&1) || {
  tail -20 "$work/build.log" >&2
  echo "setup: mypyc could not build the compiled emitter (see above)" >&2
  exit 1
}
rm -f "$dest"/mlab_emitc*.so
cp "$work"/mlab_emitc*.so "$dest"/
[ "$($PY -c 'import mlab_emitc; print(mlab_emitc.SOURCE_SHA256)')" = "$sum" ]
