"""Who acts, outside a request: Celery tasks name the person their model changes are for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from auditlog.context import set_actor
from django.contrib.auth import get_user_model


@contextmanager
def acting_as(user_or_id) -> Iterator[None]:
    """Model changes inside are logged (auditlog and ``console.change``) with this actor.

    What auditlog's middleware does for admin and API requests; a task gets the user's id in its
    arguments, so either a user or an id will do. An unknown id (the user was deleted since the
    task was queued) leaves the actor empty rather than failing the task.
    """
    user = (
        user_or_id
        if user_or_id is None or isinstance(user_or_id, get_user_model())
        else get_user_model()._default_manager.filter(pk=user_or_id).first()
    )
    with set_actor(user):
        yield
