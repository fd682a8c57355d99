"""The Docker backend: each sandbox is a hardened container on a Docker engine (docs/architecture.md)."""

from __future__ import annotations

from runtime.docker.backend import DockerRuntime

__all__ = ["DockerRuntime"]
