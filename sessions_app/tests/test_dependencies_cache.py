"""The installer's plain parts: kept install trees (runtime/package_cache.py), served only to the identical
request and never stale, and how pip is called and its outcome read (runtime/installer.py)."""

from __future__ import annotations

import os
import time

import pytest

from runtime import PackageInstall, RuntimeFailure, installer
from runtime import package_cache as pc


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


def test_a_kept_tree_is_linked_into_the_next_identical_install(tmp_path):
    req = request(tmp_path, "pkg==1")
    first = tmp_path / "first"
    first.mkdir()
    installed_tree(first)
    pc.keep(req, "k", str(first), [("pkg", "1")], ttl=60)
    second = tmp_path / "second"
    second.mkdir()
    result = pc.reuse(req, "k", str(second), ttl=60)
    assert result is not None and result.packages == (("pkg", "1"),)
    assert (second / "pkg" / "__init__.py").read_text() == "VERSION = 1\n"
    assert os.path.islink(second / "link") and os.readlink(second / "link") == "/etc/passwd"  # not followed
    assert os.stat(second / "pkg" / "__init__.py").st_ino == os.stat(first / "pkg" / "__init__.py").st_ino
    assert pc.reuse(req, "other", str(second), ttl=60) is None


def test_trees_expire_and_reuse_can_be_switched_off(tmp_path):
    req = request(tmp_path, "pkg==1")
    source = tmp_path / "source"
    source.mkdir()
    installed_tree(source)
    pc.keep(req, "k", str(source), [("pkg", "1")], ttl=0)
    target = tmp_path / "target"
    target.mkdir()
    assert pc.reuse(req, "k", str(target), ttl=60) is None  # ttl 0 kept nothing
    pc.keep(req, "k", str(source), [("pkg", "1")], ttl=60)
    manifest = tmp_path / "cache" / pc.TREES / "k" / pc.MANIFEST
    old = time.time() - 120
    os.utime(manifest, (old, old))
    assert pc.reuse(req, "k", str(target), ttl=60) is None
    assert os.listdir(target) == []


def test_pip_gets_requirements_after_a_double_dash_and_the_index_as_an_option():
    req = PackageInstall(requirements=("six==1.16.0",), index_url="https://mirror.example/simple")
    args = installer.pip_arguments(req, target="/target", cache="/cache", ca_file="/ca.pem")
    assert args[-2:] == ["--", "six==1.16.0"]
    assert args[args.index("--index-url") + 1] == "https://mirror.example/simple"
    assert args[args.index("--cert") + 1] == "/ca.pem" and args[args.index("--target") + 1] == "/target"


def test_the_ca_file_holds_the_configured_bundle_and_the_sessions_certificates(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n")
    extra = "-----BEGIN CERTIFICATE-----\nPRIVATE\n-----END CERTIFICATE-----"
    req = PackageInstall(requirements=("x",), ca_bundle=str(bundle), extra_ca_pem=extra)
    text = open(installer.write_ca_file(req, str(tmp_path))).read()
    assert "SYSTEM" in text and "PRIVATE" in text
    assert installer.write_ca_file(PackageInstall(requirements=("x",)), str(tmp_path)) == ""


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
