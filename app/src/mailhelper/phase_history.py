"""The recorded history of the job-queue migration phases (table `phase_transitions`).

The flags in the configuration say which phase a process runs in now; this history says
when the stack entered each phase, who moved it and whether a gate was forced. The phase
playbooks write it (`mailhelper phase record`) and their gates read it (`cutoff-report`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailhelper import job_runs
from mailhelper.errors import ValidationError
from mailhelper.models import PhaseTransition

PHASES = (0, 1, 2, 3)
HISTORY_LIMIT = 20


def record_transition(
    session: Session,
    *,
    to_phase: int,
    from_phase: int | None,
    actor: str,
    source: str = "",
    forced: bool = False,
    reason: str | None = None,
    at: dt.datetime | None = None,
) -> PhaseTransition:
    """Add one transition; a forced one needs a reason."""
    if to_phase not in PHASES or (from_phase is not None and from_phase not in PHASES):
        raise ValidationError(f"phases are {PHASES}, got {from_phase} -> {to_phase}")
    if not actor.strip():
        raise ValidationError("a transition needs an actor (who moved the stack)")
    if forced and not (reason or "").strip():
        raise ValidationError("a forced transition needs a reason")
    row = PhaseTransition(
        to_phase=to_phase,
        from_phase=from_phase,
        actor=actor.strip()[:200],
        source=source[:200],
        forced=forced,
        reason=(reason or None),
    )
    if at is not None:
        row.at = at
    session.add(row)
    session.flush()
    return row


def describe(row: PhaseTransition) -> dict[str, Any]:
    return {
        "at": job_runs.aware(row.at).isoformat(),
        "from_phase": row.from_phase,
        "to_phase": row.to_phase,
        "actor": row.actor,
        "source": row.source,
        "forced": row.forced,
        "reason": row.reason,
    }


def latest(session: Session, *, until: dt.datetime | None = None) -> PhaseTransition | None:
    query = select(PhaseTransition).order_by(PhaseTransition.at.desc(), PhaseTransition.id.desc())
    if until is not None:
        query = query.where(PhaseTransition.at <= until)
    return session.scalars(query.limit(1)).first()


def summary(session: Session, *, now: dt.datetime) -> dict[str, Any]:
    """What the gates and /health read: the current recorded phase, when the current stay
    in it began (so its duration), and the latest transitions, newest first."""
    rows = list(
        session.scalars(
            select(PhaseTransition)
            .where(PhaseTransition.at <= now)
            .order_by(PhaseTransition.at.desc(), PhaseTransition.id.desc())
            .limit(HISTORY_LIMIT)
        )
    )
    current = rows[0] if rows else None
    entered = job_runs.aware(current.at) if current else None
    return {
        "phase": current.to_phase if current else None,
        "since": entered.isoformat() if entered else None,
        "days_in_phase": None
        if entered is None
        else round((now - entered).total_seconds() / 86400, 4),
        "transitions": [describe(r) for r in rows],
    }
