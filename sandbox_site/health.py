"""Process start time, for the uptime the health endpoints report."""

from __future__ import annotations

import time

STARTED_AT = time.monotonic()
