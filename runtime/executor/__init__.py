"""The in-sandbox executor: a small HTTP daemon that runs Python, JavaScript and shell code on request.

It runs inside every sandbox, so it uses the standard library only, supports Python 3.9+, and imports its own
modules relatively: the same files run as the top-level package `executor` inside a sandbox
(`PYTHONPATH=<parent> python3 -m executor ...`) and as `runtime.executor` on the host.
"""

from __future__ import annotations

VERSION = "0.1.0"
