#!/usr/bin/env bash
# Keycloak (the OpenID Connect provider the portal tests sign in through) and a Java it runs
# on. Keycloak 26 needs Java 21 or newer; Debian 12 ships 17. Fetched from Maven Central with
# Debian's maven (the zip is cached in ~/.m2), unpacked under $MLAB_CACHE_DIR/keycloak (or
# ~/.cache/mlab/keycloak). Idempotent: does nothing when the pinned version is unpacked.
# Java: a JDK >= 21 already under /usr/lib/jvm is used; otherwise Debian's openjdk-21 is not
# in bookworm, so the step fails with one line naming what is missing.
set -euo pipefail
KEYCLOAK_VERSION=26.5.6
cache=${MLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlab}/keycloak
dest=$cache/keycloak-$KEYCLOAK_VERSION
if [ ! -x "$dest/bin/kc.sh" ]; then
  command -v mvn >/dev/null || { apt-get install -y -qq --no-install-recommends maven >/dev/null; }
  mkdir -p "$cache"
  mvn -B -q dependency:copy -Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:zip \
    -DoutputDirectory="$cache" >/dev/null
  tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  (cd "$tmp" && python3 -m zipfile -e "$cache/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" .)
  chmod +x "$tmp/keycloak-$KEYCLOAK_VERSION/bin/"*.sh
  mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$dest"
  rmdir "$tmp"
  rm -f "$cache/keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip"
fi
java_ok=""
for j in /usr/lib/jvm/*/bin/java; do
  v=$("$j" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/{print $2}')
  if [ "${v%%.*}" -ge 21 ] 2>/dev/null; then java_ok=$j; break; fi
done
if [ -z "$java_ok" ]; then
  echo "setup: Keycloak $KEYCLOAK_VERSION needs Java 21 or newer under /usr/lib/jvm; install a JDK 21+ there" >&2
  exit 1
fi
