"""The installer's plain parts: sealed, write-once install trees (runtime/packages/cache.py), served only to
the identical request and never stale; how the offline pip is called and its outcome read (installer.py,
wheels.py)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from runtime import PackageInstall, RuntimeFailure
from runtime.base import InstalledPackages
from runtime.packages import cache as pc
from runtime.packages import installer, wheels


def request(tmp_path, *requirements: str, **fields) -> PackageInstall:
    return PackageInstall(requirements=requirements, cache_dir=str(tmp_path / "cache"), **fields)


def installed_tree(root) -> str:
    os.makedirs(root / "pkg")
    (root / "pkg" / "__init__.py").write_text("VERSION = 1\n")
    os.symlink("/etc/passwd", root / "link")
    return str(root)


def test_the_key_covers_everything_that_decides_the_tree(tmp_path):
    base = pc.tree_key(request(tmp_path, "a==1"), "process", "/usr/bin/python3:1:2")
    assert base == pc.tree_key(request(tmp_path, "a==1"), "process", "/usr/bin/python3:1:2")
    others = {
        pc.tree_key(request(tmp_path, "a==2"), "process", "/usr/bin/python3:1:2"),
        pc.tree_key(request(tmp_path, "a==1", "b"), "process", "/usr/bin/python3:1:2"),
        pc.tree_key(request(tmp_path, "a==1"), "docker", "/usr/bin/python3:1:2"),
        pc.tree_key(request(tmp_path, "a==1"), "process", "/usr/bin/python3:1:3"),
        pc.tree_key(
            request(tmp_path, "a==1", index_url="https://mirror/simple"), "process", "/usr/bin/python3:1:2"
        ),
        pc.tree_key(request(tmp_path, "a==1", extra_ca_pem="-----BEGIN CERTIFICATE-----"), "process", "x"),
    }
    assert base not in others and len(others) == 6


def result(*packages: tuple[str, str]) -> InstalledPackages:
    return InstalledPackages(packages=packages, wheels=(("pkg-1-py3-none-any.whl", "ab" * 32),))


def test_a_kept_tree_is_sealed_and_linked_into_the_next_identical_install(tmp_path):
    req = request(tmp_path, "pkg==1")
    first = tmp_path / "first"
    first.mkdir()
    installed_tree(first)
    os.chmod(first / "pkg" / "__init__.py", 0o666)
    pc.seal(str(first), uid=os.getuid())
    assert stat.S_IMODE(os.stat(first / "pkg" / "__init__.py").st_mode) == 0o444
    pc.keep(req, "k", "tree1", str(first), result(("pkg", "1")), ttl=60)
    second = tmp_path / "second"
    second.mkdir()
    reused = pc.reuse(req, "k", str(second), ttl=60)
    assert reused is not None and reused.packages == (("pkg", "1"),)
    assert reused.wheels == (("pkg-1-py3-none-any.whl", "ab" * 32),)
    assert (second / "pkg" / "__init__.py").read_text() == "VERSION = 1\n"
    assert os.path.islink(second / "link") and os.readlink(second / "link") == "/etc/passwd"  # not followed
    assert os.stat(second / "pkg" / "__init__.py").st_ino == os.stat(first / "pkg" / "__init__.py").st_ino
    kept = tmp_path / "cache" / pc.TREES / "tree1"
    assert stat.S_IMODE(os.stat(kept / "tree" / "pkg").st_mode) == 0o555
    assert stat.S_IMODE(os.stat(kept / pc.MANIFEST).st_mode) == 0o444
    assert pc.reuse(req, "other", str(second), ttl=60) is None


def test_a_tree_is_written_once(tmp_path):
    req = request(tmp_path, "pkg==1")
    source = tmp_path / "source"
    source.mkdir()
    installed_tree(source)
    pc.keep(req, "k", "tree1", str(source), result(("pkg", "1")), ttl=60)
    (source / "pkg" / "__init__.py").unlink()
    (source / "pkg" / "__init__.py").write_text("VERSION = 2\n")
    pc.keep(req, "k2", "tree1", str(source), result(("pkg", "2")), ttl=60)
    kept = tmp_path / "cache" / pc.TREES / "tree1" / "tree" / "pkg" / "__init__.py"
    assert kept.read_text() == "VERSION = 1\n"


def test_trees_expire_and_reuse_can_be_switched_off(tmp_path):
    req = request(tmp_path, "pkg==1")
    source = tmp_path / "source"
    source.mkdir()
    installed_tree(source)
    pc.keep(req, "k", "t", str(source), result(("pkg", "1")), ttl=0)
    target = tmp_path / "target"
    target.mkdir()
    assert pc.reuse(req, "k", str(target), ttl=60) is None  # ttl 0 kept nothing
    pc.keep(req, "k", "t", str(source), result(("pkg", "1")), ttl=60)
    pointer = tmp_path / "cache" / pc.REQUESTS / "k.json"
    old = time.time() - 120
    os.utime(pointer, (old, old))
    assert pc.reuse(req, "k", str(target), ttl=60) is None
    assert os.listdir(target) == []


def test_the_offline_install_takes_exactly_the_hash_pinned_wheels(tmp_path):
    args = wheels.install_arguments("/target")
    assert {"--no-index", "--no-deps", "--require-hashes"} <= set(args)
    assert args[args.index("-r") + 1] == "/wheels/requirements.txt"
    wheel = tmp_path / "store" / "pkg-1-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"zip")
    found = wheels.Wheel("pkg", "1", wheel.name, "cd" * 32, str(wheel))
    directory = wheels.link_set([found], str(tmp_path / "set"))
    assert open(os.path.join(directory, "requirements.txt")).read() == (
        f"/wheels/pkg-1-py3-none-any.whl --hash=sha256:{'cd' * 32}\n"
    )


def test_a_package_without_a_wheel_is_refused_by_name():
    tags = wheels.TargetTags("3.11", "cp", ("cp311", "abi3", "none"), ("manylinux_2_36_x86_64",))
    output = "ERROR: Could not find a version\nERROR: No matching distribution found for poison==1.0\n"
    message = wheels.download_error(output, tags, [])
    assert message.startswith("package poison==1.0 has no wheel for this interpreter (cp311, cp311,")
    assert "only wheels are installed" in message and "No matching distribution found" in message
    refused = wheels.download_error("ProxyError 403", tags, [("files.example", 443)])
    assert refused.startswith("download refused: files.example is not an allowed destination")


def test_the_ca_file_holds_the_configured_bundle_and_the_sessions_certificates(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n")
    extra = "-----BEGIN CERTIFICATE-----\nPRIVATE\n-----END CERTIFICATE-----"
    req = PackageInstall(requirements=("x",), ca_bundle=str(bundle), extra_ca_pem=extra)
    text = open(wheels.write_ca_file(req, str(tmp_path))).read()
    assert "SYSTEM" in text and "PRIVATE" in text
    assert wheels.write_ca_file(PackageInstall(requirements=("x",)), str(tmp_path)) == ""


def test_failures_keep_pips_words_and_say_when_time_ran_out():
    stderr = (
        "WARNING: x\nERROR: Could not find a version\nERROR: No matching distribution found for six==0.0.0\n"
    )
    with pytest.raises(RuntimeFailure) as failed:
        installer.outcome(1, "", stderr, 10.0)
    assert failed.value.message.endswith("ERROR: No matching distribution found for six==0.0.0")
    with pytest.raises(RuntimeFailure) as stopped:
        installer.outcome(None, "", "Collecting six", 10.0)
    assert "time limit" in stopped.value.message
    # Exit 0 without the installer's own report is no success either (pip never got to finish).
    with pytest.raises(RuntimeFailure):
        installer.outcome(0, "Successfully installed six", "", 10.0)
    done = installer.outcome(0, f'log line\n{installer.MARKER}[["six", "1.16.0"]]\n', "", 10.0)
    assert done.packages == (("six", "1.16.0"),) and done.log == "log line"
