"""The Kubernetes backend: each sandbox is a hardened pod, reached only through the API server."""

from __future__ import annotations

from runtime.kubernetes.backend import KubernetesRuntime

__all__ = ["KubernetesRuntime"]
