"""Make the nca scheme builder importable by the tests next to it (no I/O at import)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
