"""The Airlock: stage pip and apt packages, files and git repositories into the share.

Everything here writes to the share (``/opt/public/airlock`` by default) so that a HomePod,
which has no network and mounts the share read-only, can install from it. Invariants kept
by every module: a reader never sees a partial file (temporary name + ``os.replace``),
index writers hold a lock, and every staged item gets a line in the audit log.
"""

from mlab.topology import SHARE_PATH

DEFAULT_SHARE = SHARE_PATH
"""Mount point of the Airlock share in both the Airlock and HomePods (docs/CONTRACTS.md)."""
