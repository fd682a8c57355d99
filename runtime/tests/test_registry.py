"""The registry: only backends that exist, one instance per backend, and no silent second configuration;
each backend reads its own settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime.base import RuntimeFailure
from runtime.registry import available_runtimes, config_from_settings, get_runtime, reset_runtimes


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_runtimes()
    yield
    reset_runtimes()


def test_it_lists_only_backends_that_exist():
    assert available_runtimes() == ["docker", "fake", "kubernetes", "process"]
    with pytest.raises(RuntimeFailure) as info:
        get_runtime("firecracker")
    assert info.value.permanent and "unknown runtime 'firecracker'" in info.value.message


def test_a_second_call_gets_the_live_instance_when_its_config_agrees(tmp_path):
    first = get_runtime("process", {"data_dir": str(tmp_path), "tmp_size_mb": 32})
    assert get_runtime("process") is first
    assert get_runtime("process", {"data_dir": str(tmp_path)}) is first
    # Arguments the first call left out are compared with the constructor's defaults.
    assert get_runtime("process", {"data_dir": str(tmp_path), "allow_unisolated": False}) is first


def test_a_conflicting_config_is_refused_rather_than_ignored(tmp_path):
    first = get_runtime("process", {"data_dir": str(tmp_path / "a")})
    with pytest.raises(RuntimeFailure) as info:
        get_runtime("process", {"data_dir": str(tmp_path / "b")})
    assert "already running with other settings" in info.value.message and "data_dir" in info.value.message
    with pytest.raises(RuntimeFailure):
        get_runtime("process", {"data_dir": str(tmp_path / "a"), "allow_unisolated": True})
    reset_runtimes()
    second = get_runtime("process", {"data_dir": str(tmp_path / "b")})
    assert second is not first and second.data_dir == str(tmp_path / "b")


def test_each_backend_reads_its_own_settings(tmp_path):
    settings = SimpleNamespace(
        DATA_DIR=tmp_path,
        SANDBOX_ALLOW_UNISOLATED=True,
        SANDBOX_PROCESS_UID_RANGE="300000-300099",
        SANDBOX_TMP_SIZE=16,
        SANDBOX_ALLOW_NO_SECCOMP=False,
        SANDBOX_DOCKER_URL="",
    )
    process = config_from_settings("process", settings)
    assert process == {
        "data_dir": str(tmp_path),
        "allow_unisolated": True,
        "uid_range": (300000, 300099),
        "tmp_size_mb": 16,
        "allow_no_seccomp": False,
    }
    assert config_from_settings("docker", settings) == {"data_dir": str(tmp_path), "docker_url": None}
    assert config_from_settings("fake", settings) == {}
    assert config_from_settings("kubernetes", settings) == {
        "namespace": "default",
        "image_pull_policy": "IfNotPresent",
        "runtime_class": "",
        "node_selector": {},
        "tolerations": [],
        "instance": "default",
    }
    runtime = get_runtime("process", process)
    assert runtime.tmp_size_mb == 16 and runtime.allow_unisolated


def test_a_malformed_backend_setting_is_a_permanent_failure(tmp_path):
    settings = SimpleNamespace(DATA_DIR=tmp_path, SANDBOX_PROCESS_UID_RANGE="9-3")
    with pytest.raises(RuntimeFailure) as info:
        config_from_settings("process", settings)
    assert info.value.permanent and "SANDBOX_PROCESS_UID_RANGE" in info.value.message
