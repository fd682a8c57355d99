"""Sandbox lifecycle on every backend: create, inspect, list after a restart, destroy (idempotent), refusals,
and failed creates that leave nothing behind."""

from __future__ import annotations

import dataclasses
import os

import pytest

from runtime.base import Resources, RuntimeFailure
from runtime.tests.conftest import run_code
from runtime.tests.contract.conftest import still_serves
from sandbox_site.testing import wait_until


def test_create_inspect_then_destroy_leaves_nothing_and_destroy_is_idempotent(backend):
    handle = backend.make()
    runtime = backend.runtime
    assert handle.backend == backend.name and handle.node in backend.node_names()
    assert handle.session_id in {h.session_id for h in runtime.list_managed()}
    assert backend.endpoint_exists(handle)
    assert runtime.executor(handle).health()["status"] == "ok"
    state = runtime.inspect(handle)
    assert state.exists and state.running
    assert state.memory_mb is not None and 0 < state.memory_mb < 512  # the default limit
    footprint = backend.footprint(runtime, handle)

    runtime.destroy(handle)

    assert backend.remains(footprint) == []
    assert runtime.inspect(handle).exists is False
    assert handle.session_id not in {h.session_id for h in runtime.list_managed()}
    runtime.destroy(handle)  # idempotent


def test_a_new_runtime_instance_finds_and_destroys_a_running_sandbox(backend, scratch_dir):
    first = backend.build(data_dir=scratch_dir)
    data_dir = scratch_dir
    try:
        handle = backend.make(runtime=first)
        restarted = backend.build(data_dir=data_dir)  # what a control-plane restart sees
        found = {h.session_id: h for h in restarted.list_managed()}
        assert set(found) == {handle.session_id}
        assert found[handle.session_id].sandbox_id == handle.sandbox_id
        assert found[handle.session_id].endpoint == handle.endpoint
        assert found[handle.session_id].workspace_path == handle.workspace_path
        assert restarted.inspect(found[handle.session_id]).running
        assert restarted.executor(handle).health()["status"] == "ok"  # the token comes from the session row
        other = backend.build(data_dir=data_dir + "-elsewhere")
        assert handle.session_id not in {h.session_id for h in other.list_managed()}  # scoped by data dir
        footprint = backend.footprint(restarted, handle)

        restarted.destroy(found[handle.session_id])

        assert backend.remains(footprint) == []
        assert restarted.list_managed() == []
    finally:
        for leftover in first.list_managed():
            first.destroy(leftover)


def test_a_sandbox_that_died_is_still_listed_then_destroyed_and_its_session_can_start_again(backend):
    handle = backend.make()
    footprint = backend.footprint(backend.runtime, handle)
    backend.kill(handle)
    wait_until(
        lambda: not backend.runtime.inspect(handle).running, what="the killed sandbox to read as stopped"
    )
    assert backend.runtime.inspect(handle).exists
    assert handle.session_id in {h.session_id for h in backend.runtime.list_managed()}
    replacement = backend.make(session_id=handle.session_id)  # a dead sandbox does not block its session
    assert backend.runtime.executor(replacement).health()["status"] == "ok"
    backend.runtime.destroy(replacement)
    backend.runtime.destroy(handle)
    assert backend.remains(footprint) == []


def test_a_second_create_for_a_running_session_is_refused_and_leaves_the_first_alone(backend):
    handle = backend.make()
    with pytest.raises(RuntimeFailure, match="already running") as info:
        backend.make(session_id=handle.session_id)
    assert info.value.permanent
    assert backend.runtime.inspect(handle).running
    still_serves(backend, handle)


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".hidden", "x" * 200])
def test_session_ids_that_are_not_plain_names_are_refused(backend, scratch_dir, bad):
    runtime = backend.build(data_dir=scratch_dir)
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(backend.spec(session_id=bad))
    assert info.value.permanent
    assert runtime.list_managed() == []
    assert [os.path.join(top, name) for top, _, names in os.walk(scratch_dir) for name in names] == []


@pytest.mark.parametrize(
    "env", [{"LD_PRELOAD": "/workspace/x.so"}, {"SANDBOX_EXECUTOR_TOKEN": "x"}, {"bad name": "1"}]
)
def test_environment_that_would_steer_the_executor_is_refused(backend, env):
    with pytest.raises(RuntimeFailure) as info:
        backend.make(session_id="envcheck", env=env)
    assert info.value.permanent and "environment refused" in info.value.message
    assert backend.remains_of(backend.runtime, "envcheck") == []


def test_an_executor_that_fails_to_start_is_reported_with_its_output_and_leaves_nothing(backend, scratch_dir):
    runtime = backend.build(data_dir=scratch_dir, max_output=-1)  # the executor refuses this option
    with pytest.raises(RuntimeFailure) as info:
        runtime.create(backend.spec(session_id="broken"))
    assert "--max-output must be zero or more" in info.value.message
    assert backend.remains_of(runtime, "broken") == []


def test_a_start_that_times_out_leaves_nothing_behind(backend, scratch_dir):
    runtime = backend.build(data_dir=scratch_dir, startup_timeout=0.0)
    with pytest.raises(RuntimeFailure, match="did not become healthy") as info:
        runtime.create(backend.spec(session_id="slow"))
    assert not info.value.permanent  # a retry may well succeed
    assert backend.remains_of(runtime, "slow") == []


def test_a_session_id_too_long_for_a_socket_path_still_works(backend):
    session_id = "t" + "x" * 127  # the longest id sessions allow
    handle = backend.make(session_id=session_id)
    assert backend.runtime.executor(handle).health()["status"] == "ok"
    assert run_code(backend.runtime, handle, "print('long')").stdout == "long\n"
    assert handle.endpoint in {h.endpoint for h in backend.build().list_managed()}  # found after a restart
    footprint = backend.footprint(backend.runtime, handle)
    backend.runtime.destroy(handle)
    assert backend.remains(footprint) == []


def test_a_claimed_warm_sandbox_is_resized_if_it_can_be_and_destroyed_through_the_claiming_handle(backend):
    warm = backend.make(session_id=f"w{os.urandom(4).hex()}", memory_mb=256)
    claimed = dataclasses.replace(warm, session_id="claimingsession")  # what the session row stores
    footprint = backend.footprint(backend.runtime, warm)
    if backend.runtime.resizes_live:
        backend.runtime.update_resources(claimed, Resources(memory_mb=384))
    else:  # only sessions asking for the warm sandbox's own resources claim it
        backend.runtime.update_resources(claimed, Resources(memory_mb=256))
        with pytest.raises(RuntimeFailure, match="cannot change") as info:
            backend.runtime.update_resources(claimed, Resources(memory_mb=384))
        assert info.value.permanent
    assert run_code(backend.runtime, claimed, "print('served')").stdout == "served\n"
    state = backend.runtime.inspect(claimed)
    assert state.running and state.memory_mb is not None and 0 < state.memory_mb < 384
    backend.runtime.destroy(claimed)
    assert backend.remains(footprint) == []  # the warm sandbox's directory, mounts and processes went too
    assert backend.runtime.inspect(warm).exists is False
