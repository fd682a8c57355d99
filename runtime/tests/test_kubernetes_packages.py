"""The kubernetes pod's packages container and the tar it is sent, without a cluster (the install itself runs
against the test cluster in sessions_app/tests/test_dependencies.py)."""

from __future__ import annotations

import os
import tarfile

from runtime.base import SandboxSpec
from runtime.kubernetes import packages as kp
from runtime.kubernetes import spec as ks


def manifest():
    spec = SandboxSpec(session_id="s1", image="img", token="t")
    return ks.pod_manifest(
        spec, image="img", env={}, instance="i", uid=4321, gid=4321, image_pull_policy="Never"
    )


def test_only_the_packages_container_can_write_the_packages_volume():
    pod = manifest()
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    sandbox, sidecar = containers[ks.CONTAINER], containers[kp.SIDECAR]
    mounts = [
        (c["name"], m)
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        for m in c.get("volumeMounts", [])
        if m["name"] == kp.VOLUME
    ]
    assert sorted(name for name, _ in mounts) == [kp.SIDECAR, ks.CONTAINER]
    for name, mount in mounts:
        assert mount["mountPath"] == ks.PACKAGES
        assert mount.get("readOnly", False) is (name == ks.CONTAINER)
    # The sandbox's own non-root uid and hardening, idle under the image's entrypoint, tiny.
    assert sidecar["securityContext"] == sandbox["securityContext"]
    assert sidecar["securityContext"]["runAsUser"] == 4321 and sidecar["image"] == sandbox["image"]
    assert sidecar["args"] == ["sleep", "infinity"] and "command" not in sidecar
    assert sidecar["resources"]["limits"]["memory"] == "64Mi"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == kp.VOLUME)
    assert volume["emptyDir"]["sizeLimit"] == f"{kp.PACKAGES_MB}Mi"


def test_the_tar_keeps_symlinks_and_gives_the_pod_a_tree_it_can_swap(tmp_path):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("x = 1\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(tree / "bin" / "tool", 0o555)
    os.symlink("pkg/__init__.py", tree / "link")
    for path in (tree / "pkg" / "__init__.py", tree / "pkg", tree / "bin", tree):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)  # sealed, as the shared tree store keeps it
    archive = tmp_path / "packages.tar"
    kp.write_tar(str(tree), str(archive))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"bin", "bin/tool", "link", "pkg", "pkg/__init__.py"}
    assert members["link"].issym() and members["link"].linkname == "pkg/__init__.py"
    assert members["pkg"].mode == 0o755 and members["pkg/__init__.py"].mode == 0o644
    assert members["bin/tool"].mode == 0o755
    assert all(m.uid == 0 and m.uname == "" for m in members.values())
