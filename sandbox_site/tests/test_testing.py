"""wait_until, the one way tests wait on another thread or process."""

from __future__ import annotations

import itertools

import pytest

from sandbox_site.testing import wait_until


def test_it_returns_the_first_truthy_value_of_the_condition():
    calls = itertools.count(1)
    assert wait_until(lambda: next(calls) >= 3 and "ready", interval=0, what="the third call") == "ready"
    assert next(calls) == 4


def test_it_fails_naming_what_it_waited_for_the_last_value_and_the_context():
    with pytest.raises(AssertionError) as failed:
        wait_until(lambda: [], timeout=0.1, what="the worker to start", context=lambda: "log tail")
    message = str(failed.value)
    assert "waiting for the worker to start" in message
    assert "(last: [])" in message
    assert message.endswith("\nlog tail")


def test_ignored_exceptions_mean_not_yet_and_others_end_the_wait_at_once():
    attempts = itertools.count(1)

    def answers() -> bool:
        if next(attempts) < 3:
            raise ConnectionRefusedError("not listening yet")
        return True

    assert wait_until(answers, interval=0, ignoring=(OSError,), what="the server to answer") is True

    def exited() -> bool:
        raise RuntimeError("the server exited with 1")

    with pytest.raises(RuntimeError, match="exited with 1"):
        wait_until(exited, ignoring=(OSError,), what="the server to answer")


def test_an_ignored_exception_still_at_the_deadline_is_shown_in_the_failure():
    def refused() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError, match="nobody listens"):
        wait_until(refused, timeout=0.1, ignoring=(OSError,), what="the server to answer")
