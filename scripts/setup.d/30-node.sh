#!/usr/bin/env bash
# The one-node Kubernetes of `mlab node up` (tests/node): build its programs from the
# pinned Go modules under src/mlab/node/go/ into the state dir (cached by recipe hash:
# does nothing when they are built). Needs Go (the machines have it in /usr/local/go);
# Debian's parts (containerd, etcd-server, CNI plugins, ipset) come from apt-packages.txt.
# About 10 minutes on 2 cores the first time, seconds afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "setup: 30-node: go is not installed (Go 1.24 or newer is needed to build the node)" >&2
  exit 1
fi
.venv/bin/mlab node build -q >/dev/null
