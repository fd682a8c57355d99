from __future__ import annotations

import itertools
import re

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from sessions_app.models import SESSION_TRANSITIONS, InvalidTransition, SandboxSession, SessionStatus

ALL = list(SessionStatus.values)
ALLOWED = {(a, b) for a, targets in SESSION_TRANSITIONS.items() for b in targets}


def test_the_state_machine_is_as_designed():
    assert SESSION_TRANSITIONS[SessionStatus.CREATING] == {"running", "failed", "timeout", "terminated"}
    assert SESSION_TRANSITIONS[SessionStatus.RUNNING] == {"completed", "failed", "timeout", "terminated"}
    for terminal in ("completed", "failed", "timeout", "terminated"):
        assert SESSION_TRANSITIONS[terminal] == frozenset()


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), sorted(ALLOWED))
def test_allowed_transitions_are_stored(make_session, user, source, target):
    session = make_session(user, status=source)
    session.transition(target, reason="why")
    stored = SandboxSession.objects.get(pk=session.pk)
    assert stored.status == target
    assert stored.termination_reason == "why"
    assert (stored.completed_at is not None) == (target not in ("creating", "running"))


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), sorted(set(itertools.product(ALL, ALL)) - ALLOWED))
def test_illegal_transitions_are_refused_and_change_nothing(make_session, user, source, target):
    session = make_session(user, status=source)
    with pytest.raises(InvalidTransition, match=f"cannot move from {source} to {target}"):
        session.transition(target)
    assert SandboxSession.objects.get(pk=session.pk).status == source


@pytest.mark.django_db
def test_a_stale_instance_loses_the_race(make_session, user):
    session = make_session(user, status=SessionStatus.RUNNING)
    stale = SandboxSession.objects.get(pk=session.pk)
    session.mark_terminated("user_request")
    with pytest.raises(InvalidTransition, match="from terminated to failed"):
        stale.mark_failed("container_lost")
    stored = SandboxSession.objects.get(pk=session.pk)
    assert (stored.status, stored.termination_reason) == ("terminated", "user_request")


@pytest.mark.django_db
def test_named_transitions_set_status_and_reason(make_session, user):
    session = make_session(user)
    session.mark_running()
    assert session.status == "running"
    session.mark_timeout("lifetime_exceeded")
    session.refresh_from_db()
    assert (session.status, session.termination_reason) == ("timeout", "lifetime_exceeded")


@pytest.mark.django_db
def test_generated_ids_have_the_public_format_and_differ(make_session, user):
    ids = {make_session(user).id for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"sess_[a-z0-9]{16}", session_id) for session_id in ids)


@pytest.mark.django_db
def test_a_client_supplied_id_is_kept_and_must_be_unique(make_session, user, other_user):
    assert make_session(user, id="my-run.01_A").id == "my-run.01_A"
    with pytest.raises(IntegrityError), transaction.atomic():
        make_session(other_user, id="my-run.01_A")


@pytest.mark.django_db
@pytest.mark.parametrize("bad_id", ["", "x" * 65, "a/b", "a b", "semi;colon", "ü", ".", "..", "-rf", "_x"])
def test_malformed_client_ids_are_refused(make_session, user, python_template, bad_id):
    session = SandboxSession(id=bad_id, owner=user, template=python_template)
    with pytest.raises(ValidationError) as error:
        session.full_clean()
    assert "id" in error.value.message_dict


@pytest.mark.django_db
def test_visible_to_limits_non_staff_to_their_own(make_session, user, other_user, staff_user):
    mine = make_session(user)
    theirs = make_session(other_user)
    assert list(SandboxSession.objects.visible_to(user)) == [mine]
    assert set(SandboxSession.objects.visible_to(staff_user)) == {mine, theirs}


@pytest.mark.django_db
def test_touch_moves_the_idle_deadline(make_session, user):
    session = make_session(user, status=SessionStatus.RUNNING, timeout=60)
    session.touch()
    stored = SandboxSession.objects.get(pk=session.pk)
    assert (stored.idle_deadline_at - stored.last_activity_at).total_seconds() == 60
