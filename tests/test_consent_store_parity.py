"""Each consent write is defined once; the stores that run it must leave the same rows.

The same sequence of plans (`app.core.consent_plan.ConsentPlan`: texts, event, chain head,
subscriptions, outbox quietening, replies) is written through every store on every
backend at hand: the SQLite hot store (`SqliteHotStore`, Core statements compiled for
sqlite3), the session store (`SessionConsentStore`, the same statements through
SQLAlchemy) on SQLite and on PostgreSQL, and PostgreSQL's hand-tuned hot store
(`PostgresHotStore`). Each store must load the same state before each step, and the
rows of every table the plans touch must then be equal, field by field.

The plans are decided once (by the real planners: an inbound text, a carrier opt-out,
a staff decision, an import, an erasure) and the very same plan objects are written
everywhere, so any difference is the stores'.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.config import DEMO_PROGRAMS_FILE
from app.consent.importer import ImportRow, plan_import
from app.consent.inbound import InboundText, plan_inbound
from app.consent.review import plan_decision
from app.consent.service import plan_carrier_opt_out
from app.core.consent_plan import ConsentPlan, LoadedState
from app.core.programs import load_programs
from app.privacy.erasure import plan_erasure
from app.store.consent_sql import SessionConsentStore
from app.store.db import Database
from app.store.hot_path import open_hot_store
from app.store.models import (
    ConsentEvent,
    LedgerText,
    OutboundMessage,
    Subscriber,
    Subscription,
)
from tests.conftest import TEST_DATABASE_URL, fresh_postgresql_database, truncate_postgresql

CATALOG = load_programs(DEMO_PROGRAMS_FILE)
SHORT_CODE = CATALOG.programs[0].numbers[0] if CATALOG.programs[0].numbers else "12345"
T0 = datetime(2026, 12, 2, 9, 30, 0, 123456, tzinfo=UTC)
A, B, C = "+14155550101", "+14155550102", "+14155550103"


@dataclass
class StoreUnderTest:
    """One store on one backend, on a fresh database of its own: how to open it for a step.

    PostgreSQL's hot store writes only what the inbound hot path writes; the other
    steps go through a session store on the same database (`fallback`).
    """

    name: str
    database: Database
    open: Callable[[], Any]
    fallback: Callable[[], Any] | None = None


@contextmanager
def _session_store(database: Database) -> Iterator[SessionConsentStore]:
    with database.transaction() as session:
        yield SessionConsentStore(session)


def stores(request, tmp_path) -> list[StoreUnderTest]:
    found = []
    for kind in ("hot", "session"):
        path = tmp_path / f"{kind}.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        database = Database(f"sqlite:///{path}")
        opener = (
            (lambda d=database: open_hot_store(d))
            if kind == "hot"
            else (lambda d=database: _session_store(d))
        )
        found.append(StoreUnderTest(f"sqlite {kind}", database, opener))
    if TEST_DATABASE_URL:
        hot = Database(request.getfixturevalue("parity_postgresql_url"))
        found.append(
            StoreUnderTest(
                "postgresql hot",
                hot,
                lambda d=hot: open_hot_store(d),
                fallback=lambda d=hot: _session_store(d),
            )
        )
        url = request.getfixturevalue("postgresql_schema")
        truncate_postgresql(url)
        session = Database(url)
        found.append(
            StoreUnderTest("postgresql session", session, lambda d=session: _session_store(d))
        )
    return found


@pytest.fixture
def parity_postgresql_url() -> Iterator[str]:
    """A second migrated PostgreSQL database, for the hot store's copy of the plans."""
    with fresh_postgresql_database("parity") as url:
        yield url


def inbound(body: str, phone: str, at: datetime, n: int) -> Callable[[LoadedState], ConsentPlan]:
    text = InboundText(f"SM{n:032x}", "AC" + "0" * 32, phone, SHORT_CODE, body, None, at)
    return lambda state: plan_inbound(CATALOG, text, state)


@dataclass(frozen=True)
class FlaggedEvent:
    """What `plan_decision` reads of the flagged text."""

    id: int
    to_number: str
    program_id: str


# (phone, planner, message_sid, at, hot-path capable)
def steps() -> list[tuple[str, Callable[[LoadedState], ConsentPlan], str | None, datetime, bool]]:
    program = CATALOG.programs[0].id
    at = [T0 + timedelta(minutes=i) for i in range(12)]
    row = ImportRow(
        line=2,
        phone=C,
        program_id=program,
        consented_at=T0 - timedelta(days=40),
        method="web form example.com/join",
        disclosure_text="Demo alerts: up to 4 msgs/mo. Msg&data rates may apply. Reply STOP.",
        language="es",
        keyword=None,
    )
    return [
        (A, inbound("JOIN", A, at[0], 1), f"SM{1:032x}", at[0], True),
        (A, inbound("HELP", A, at[1], 2), f"SM{2:032x}", at[1], True),
        (A, inbound("YES", A, at[2], 3), f"SM{3:032x}", at[2], True),
        (B, inbound("ALTO", B, at[3], 4), f"SM{4:032x}", at[3], True),
        (B, inbound("JOIN", B, at[4], 5), f"SM{5:032x}", at[4], True),
        (A, inbound("we must stop the bill", A, at[5], 6), f"SM{6:032x}", at[5], True),
        (
            A,
            lambda state: plan_decision(
                CATALOG,
                state,
                FlaggedEvent(6, SHORT_CODE, program),
                phone=A,
                program_ids=CATALOG.programs_touched(SHORT_CODE, program),
                treat_as_opt_out=True,
                reason="asked us to stop",
                staff_email="officer@example.com",
                now=at[6],
            ),
            None,
            at[6],
            True,
        ),
        (
            B,
            lambda state: plan_carrier_opt_out(
                state,
                phone=B,
                program_ids=CATALOG.programs_touched(SHORT_CODE, program),
                occurred_at=at[7],
                error_code=21610,
                number_texted=SHORT_CODE,
                message_sid="SM" + "b" * 32,
            ),
            None,
            at[7],
            True,
        ),
        (
            C,
            lambda state: plan_import(state, row, "none", source="crm", now=at[8]),
            None,
            at[8],
            True,
        ),
        (
            A,
            lambda state: plan_erasure(
                state, actor="cli:test", reason="ticket 7", digest="d" * 64, now=at[9]
            ),
            None,
            at[9],
            False,  # erasures never take the inbound hot path
        ),
    ]


def dump(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row the plans touch, as plain values.

    Subscriptions are compared by (subscriber, program) without their surrogate id:
    PostgreSQL's INSERT … ON CONFLICT takes a sequence value even when it updates, SQLite
    does not, and nothing refers to that id.
    """
    tables = {
        "subscribers": (Subscriber, [Subscriber.id], ()),
        "subscriptions": (
            Subscription,
            [Subscription.subscriber_id, Subscription.program_id],
            ("id",),
        ),
        "consent_events": (ConsentEvent, [ConsentEvent.id], ()),
        "ledger_texts": (LedgerText, [LedgerText.sha256], ()),
        "outbound_messages": (OutboundMessage, [OutboundMessage.id], ()),
    }
    out = {}
    with database.transaction(write=False) as session:
        for name, (model, order, skip) in tables.items():
            rows = session.execute(select(model).order_by(*order)).scalars().all()
            out[name] = [
                {
                    c.key: _plain(getattr(r, c.key))
                    for c in model.__table__.columns
                    if c.key not in skip
                }
                for r in rows
            ]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def test_every_store_writes_the_same_rows(request, tmp_path):
    under_test = stores(request, tmp_path)
    try:
        for phone, planner, message_sid, at, hot_capable in steps():
            plan = None
            loaded = {}
            for store in under_test:
                opener = store.open if hot_capable or store.fallback is None else store.fallback
                with opener() as opened:
                    state = opened.load(phone, message_sid, at)
                    loaded[store.name] = replace(state, new_subscriber=False)
                    plan = plan or planner(state)
                    assert opened.write(plan, state) is not None, store.name
            assert len(set(map(repr, loaded.values()))) == 1, loaded
        dumps = {s.name: dump(s.database) for s in under_test}
    finally:
        for store in under_test:
            store.database.dispose()
    reference_name, reference = next(iter(dumps.items()))
    assert reference["consent_events"], "the plans wrote nothing"
    assert len(reference["consent_events"]) == len(steps())
    for name, rows in dumps.items():
        for table in reference:
            assert rows[table] == reference[table], f"{name} differs from {reference_name}: {table}"
