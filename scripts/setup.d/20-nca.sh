#!/usr/bin/env bash
# network-config-analyzer (nca) in its own virtualenv (.venv-nca): it pins its own
# dependencies, which must not meet the project's. Used by tests/nca to prove the
# NetworkPolicy edges offline. Idempotent: does nothing when the pinned version is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
NCA_VERSION=2.1.0
if [ -x .venv-nca/bin/nca ] && .venv-nca/bin/pip show network-config-analyzer 2>/dev/null \
    | grep -qx "Version: ${NCA_VERSION}"; then
  exit 0
fi
python3 -m venv .venv-nca
.venv-nca/bin/pip install -q --disable-pip-version-check "network-config-analyzer==${NCA_VERSION}"
KUBECONFIG=/nonexistent .venv-nca/bin/nca --version >/dev/null
