"""The one environment rule (runtime/environment.py) and the one health wait (runtime/readiness.py)."""

from __future__ import annotations

import pytest

from runtime import environment, readiness
from runtime.base import RuntimeFailure
from runtime.client import ExecutorClient


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_AUDIT", "HOME", "PATH", "GCONV_PATH", "SANDBOX_EXECUTOR_TOKEN", "1X", "A-B", ""],
)
def test_names_that_would_steer_the_executor_are_refused(name):
    assert "not allowed as variable names" in (environment.refusal({name: "x"}) or "")
    with pytest.raises(ValueError):
        environment.check_env({name: "x"})


def test_ordinary_variables_pass_and_values_are_bounded():
    assert environment.refusal({"PYTHONPATH": "/workspace", "LANG": "C.UTF-8", "EMPTY": ""}) is None
    assert "NUL" in (environment.refusal({"A": "a\0b"}) or "")
    assert environment.refusal({"A": "x" * environment.MAX_VALUE_CHARS}) is None
    assert environment.refusal({"A": "x" * (environment.MAX_VALUE_CHARS + 1)})
    many = {f"V{i}": "" for i in range(environment.MAX_VARIABLES + 1)}
    assert environment.refusal(many) == f"at most {environment.MAX_VARIABLES} variables"
    # A sandbox's environment merges a template's and a session's variables: no count at create.
    assert environment.check_env(many) == many


def test_the_wait_stops_as_soon_as_the_backend_says_the_sandbox_died(tmp_path):
    client = ExecutorClient(str(tmp_path / "never.sock"), "t0ken")
    calls = []

    def alive() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeFailure("the supervisor exited with status 1")

    with pytest.raises(RuntimeFailure) as info:
        readiness.wait_healthy(client, 600, alive=alive, what="sandbox s1: the executor")
    assert info.value.message == "the supervisor exited with status 1" and len(calls) == 3


def test_the_wait_names_what_did_not_become_healthy(tmp_path):
    client = ExecutorClient(str(tmp_path / "never.sock"), "t0ken")
    with pytest.raises(RuntimeFailure) as info:
        readiness.wait_healthy(client, 0.05, what="sandbox s1: the executor")
    assert info.value.message.startswith("sandbox s1: the executor did not become healthy within 0.05 s")
