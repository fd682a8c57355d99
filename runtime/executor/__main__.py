"""Entry point: `python3 -m executor --socket PATH --workspace DIR ...` (see server.main)."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
