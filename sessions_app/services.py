"""Session workflows: the functions the API, console, admin, tasks and commands all call."""

from __future__ import annotations

import logging

from sessions_app.models import InvalidTransition, SandboxSession, SessionStatus
from sessions_app.sandboxes import handle_for, runtime_for

logger = logging.getLogger(__name__)


def session_release_sandbox(*, session: SandboxSession) -> None:
    """Destroy the session's sandbox, if it has one. Failures are logged: state sync removes leftovers."""
    handle = handle_for(session)
    if handle is None:
        return
    try:
        runtime_for(session).destroy(handle)
    except Exception:
        logger.exception("could not destroy sandbox %s of session %s", handle.sandbox_id, session.id)


def session_terminate(*, session: SandboxSession, reason: str = "user_request") -> SandboxSession:
    """End a live session and remove its sandbox. Idempotent: an ended session is returned as it is.

    The status changes first, so no new execution starts on a sandbox that is about to disappear.
    """
    if session.status in (SessionStatus.CREATING, SessionStatus.RUNNING):
        try:
            session.mark_terminated(reason)
        except InvalidTransition:
            # Someone else ended it first; their ending stands.
            session.refresh_from_db()
            return session
        session_release_sandbox(session=session)
    return session
