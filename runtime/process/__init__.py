"""The process backend: each sandbox is a bubblewrap-confined process tree on this host (docs/architecture.md)."""

from __future__ import annotations

from runtime.process.backend import ProcessRuntime

__all__ = ["ProcessRuntime"]
