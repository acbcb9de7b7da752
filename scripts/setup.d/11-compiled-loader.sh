#!/usr/bin/env bash
# The site file loader's common case (src/mlab/strict_yaml_c.c: libyaml's events straight to
# dicts, lists and strings) built with gcc into the project virtualenv as the module
# `mlab_yamlc`, stamped with the sha256 of the source it was built from: mlab.strict_yaml
# uses it only while the stamp matches (else PyYAML's binding: same objects, slower). The
# largest serial part of `mlab render` on a 10,000-user site (issue 18).
# Idempotent: does nothing when the installed module's stamp matches the source.
# setup.sh runs it without --tests too: it is part of the command, not of the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
src=src/mlab/strict_yaml_c.c
sum=$(sha256sum "$src" | cut -d' ' -f1)
if [ "$($PY -c 'import mlab_yamlc; print(mlab_yamlc.SOURCE_SHA256)' 2>/dev/null)" = "$sum" ]; then
  exit 0
fi
read -r include dest suffix < <($PY -c 'import sysconfig as s; print(s.get_paths()["include"], s.get_paths()["platlib"], s.get_config_var("EXT_SUFFIX"))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# gcc, libc6-dev, python3-dev and libyaml-dev come from scripts/apt-packages.txt.
gcc -O2 -shared -fPIC -Wall -Werror -I"$include" -DSOURCE_SHA256="\"$sum\"" \
  -o "$work/mlab_yamlc$suffix" "$src" -lyaml 2>"$work/build.log" || {
  tail -20 "$work/build.log" >&2
  echo "setup: gcc could not build the compiled site loader (see above)" >&2
  exit 1
}
rm -f "$dest"/mlab_yamlc*.so
cp "$work/mlab_yamlc$suffix" "$dest"/
[ "$($PY -c 'import mlab_yamlc; print(mlab_yamlc.SOURCE_SHA256)')" = "$sum" ]
