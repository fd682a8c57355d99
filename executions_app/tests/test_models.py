from __future__ import annotations

import itertools
import re

import pytest
from django.db import IntegrityError, connection, transaction

from executions_app.models import EXECUTION_TRANSITIONS, Execution, ExecutionOutputChunk, ExecutionStatus
from sessions_app.models import InvalidTransition

ALL = list(ExecutionStatus.values)
ALLOWED = {(a, b) for a, targets in EXECUTION_TRANSITIONS.items() for b in targets}
FINISHED = {"completed", "failed", "timeout", "crashed", "cancelled"}


@pytest.fixture
def session(make_session, user):
    return make_session(user, status="running")


def make_execution(session, **fields):
    fields.setdefault("language", "python")
    fields.setdefault("code", "print(1)")
    return Execution.objects.create(session=session, **fields)


def test_the_state_machine_is_as_designed():
    assert EXECUTION_TRANSITIONS["pending"] == {"running", "cancelled", "crashed"}
    assert EXECUTION_TRANSITIONS["running"] == FINISHED
    assert all(EXECUTION_TRANSITIONS[s] == frozenset() for s in FINISHED)


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transitions_are_stored(session, source, target):
    execution = make_execution(session, status=source)
    execution.transition(target)
    stored = Execution.objects.get(pk=execution.pk)
    assert stored.status == target
    assert (stored.completed_at is not None) == (target in FINISHED)
    assert (stored.started_at is not None) == (target == "running")


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), sorted(set(itertools.product(ALL, ALL)) - ALLOWED))
def test_illegal_transitions_are_refused(session, source, target):
    execution = make_execution(session, status=source)
    with pytest.raises(InvalidTransition):
        execution.transition(target)
    assert Execution.objects.get(pk=execution.pk).status == source


@pytest.mark.django_db
def test_claiming_is_won_by_one_instance_only(session):
    execution = make_execution(session)
    first, second = Execution.objects.get(pk=execution.pk), Execution.objects.get(pk=execution.pk)
    first.transition("running")
    with pytest.raises(InvalidTransition, match="from running to running"):
        second.transition("running")


@pytest.mark.django_db
def test_ids_have_the_public_format(session):
    ids = {make_execution(session).id for _ in range(30)}
    assert len(ids) == 30 and all(re.fullmatch(r"exec_[a-z0-9]{16}", i) for i in ids)


@pytest.mark.django_db
def test_exit_code_is_null_until_finished(session):
    execution = make_execution(session)
    assert Execution.objects.get(pk=execution.pk).exit_code is None
    execution.transition("running")
    execution.transition("completed", exit_code=0)
    assert Execution.objects.get(pk=execution.pk).exit_code == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value", [0, "", [], False, {}, 0.0, None, {"result": "hello world"}, [1, None, "x"]]
)
def test_return_values_round_trip_including_falsy_ones(session, value):
    execution = make_execution(session, return_value=value)
    stored = Execution.objects.get(pk=execution.pk).return_value
    assert stored == value and type(stored) is type(value)


@pytest.mark.django_db
def test_output_chunks_are_unique_per_execution_and_seq(session):
    execution = make_execution(session)
    ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stdout", data="a")
    other = make_execution(session)
    ExecutionOutputChunk.objects.create(execution=other, seq=1, stream="stdout", data="b")
    with pytest.raises(IntegrityError), transaction.atomic():
        ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stderr", data="c")


@pytest.mark.django_db
def test_output_columns_are_long_enough_for_large_output(session):
    # 8 MiB stays under MariaDB's default 16 MiB packet; the column type check below covers the rest.
    big = "x" * (8 * 1024 * 1024)
    execution = make_execution(session, stdout=big)
    ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stdout", data=big)
    assert len(Execution.objects.get(pk=execution.pk).stdout) == len(big)
    assert len(ExecutionOutputChunk.objects.get(execution=execution).data) == len(big)
    if connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND column_name IN ('stdout', 'stderr', 'data', 'code')"
            )
            types = {(t.lower(), c.lower()): d.lower() for t, c, d in cursor.fetchall()}
        assert types[("executions_app_execution", "stdout")] == "longtext"
        assert types[("executions_app_executionoutputchunk", "data")] == "longtext"


@pytest.mark.django_db
def test_deleting_a_session_removes_its_executions_and_chunks(session):
    execution = make_execution(session)
    ExecutionOutputChunk.objects.create(execution=execution, seq=1, stream="stdout", data="a")
    session.delete()
    assert not Execution.objects.exists() and not ExecutionOutputChunk.objects.exists()


@pytest.mark.django_db
def test_visible_to_hides_other_owners_executions(make_session, user, other_user, staff_user):
    mine = make_execution(make_session(user))
    theirs = make_execution(make_session(other_user))
    assert list(Execution.objects.visible_to(user)) == [mine]
    assert set(Execution.objects.visible_to(staff_user)) == {mine, theirs}
