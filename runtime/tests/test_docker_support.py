"""Shared helpers of the Docker runtime tests (this module holds no tests of its own).

The tests need a real engine and the images from images/build.sh; when either is truly absent they skip
with a reason naming it, unless SANDBOX_REQUIRE_DOCKER=1 (CI, after .ci/docker-setup.sh) turns that into a
failure, so a broken setup cannot pass as "all skipped".
"""

from __future__ import annotations

import functools
import os
import secrets
import uuid
from typing import Any

import pytest

from runtime.base import Resources, SandboxHandle, SandboxSpec
from runtime.docker import DockerRuntime

PYTHON_IMAGE = "sandbox-template-python-basic:latest"
NODE_IMAGE = "sandbox-template-nodejs-basic:latest"
DATASCIENCE_IMAGE = "sandbox-template-python-datascience:latest"
REQUIRED = os.environ.get("SANDBOX_REQUIRE_DOCKER", "").lower() in ("1", "true", "yes")


@functools.cache
def _engine_problem() -> str | None:
    try:
        import docker

        client = docker.DockerClient(version="auto", timeout=10)
        client.ping()
        client.close()
    except Exception as exc:
        return f"the Docker engine is not reachable ({type(exc).__name__}: {exc}); run .ci/docker-setup.sh"
    return None


@functools.cache
def _image_problem(image: str) -> str | None:
    import docker

    client = docker.DockerClient(version="auto", timeout=10)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f"image {image} is not built; run images/build.sh"
    finally:
        client.close()
    return None


def require(*images: str) -> None:
    """Skip (or, under SANDBOX_REQUIRE_DOCKER, fail) the calling test unless the engine and images exist."""
    problem = _engine_problem()
    for image in images:
        if problem:
            break
        problem = _image_problem(image)
    if problem:
        if REQUIRED:
            pytest.fail(f"SANDBOX_REQUIRE_DOCKER is set but {problem}")
        pytest.skip(problem)


class Sandboxes:
    """A DockerRuntime on a throwaway data dir, and the sandboxes made through it (all destroyed on close)."""

    def __init__(self, data_dir: str, **config: Any) -> None:
        self.runtime = DockerRuntime(data_dir=data_dir, **config)
        self.made: list[tuple[DockerRuntime, SandboxHandle]] = []

    def make(
        self,
        *,
        image: str = PYTHON_IMAGE,
        env: dict[str, str] | None = None,
        runtime: DockerRuntime | None = None,
        session_id: str | None = None,
        **resources: Any,
    ) -> SandboxHandle:
        spec = SandboxSpec(
            session_id=session_id or f"t{uuid.uuid4().hex[:12]}",
            image=image,
            token=secrets.token_urlsafe(24),
            resources=Resources(**resources),
            env=env or {},
            labels={"sandbox.test": "docker"},
        )
        runtime = runtime or self.runtime
        handle = runtime.create(spec)
        self.made.append((runtime, handle))
        return handle

    def close(self) -> None:
        for runtime, handle in self.made:
            try:
                runtime.destroy(handle)
            except Exception:  # a test that broke the engine must still report its own failure
                pass
        for handle in self.runtime.list_managed():
            self.runtime.destroy(handle)

    def __enter__(self) -> Sandboxes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def engine() -> Any:
    import docker

    return docker.DockerClient(version="auto", timeout=30)
