"""Import an existing subscriber list, with its consent evidence, into the ledger.

The CSV file (UTF-8, a header row; column order is free):

=================  ========  ==============================================================
column             required  meaning
=================  ========  ==============================================================
phone              yes       E.164 (+ and country code), or national in PHONE_DEFAULT_REGION
program            yes       a program id from the programs file
consented_at       yes       when consent was given: ISO 8601 with a zone, not in the future
method             yes       how it was given ("web form example.com/join", "keyword JOIN")
disclosure_text    yes       the exact text shown to the person when they consented
language           no        en, es, fr, ru or bg: the language of later replies
keyword            no        the keyword they texted, when consent came by text
state              no        the US state they live in (sending rules: quiet hours, caps)
zip                no        their 5-digit ZIP code (sending rules)
purchased_on       no        date of their last purchase (Oregon's frequency-cap exemption)
=================  ========  ==============================================================

Each row is checked, then imported in a transaction of its own: it becomes one
ledger event (kind ``import``, the source as actor, the disclosure stored
content-addressed, the time of consent as the event's time) and an ``active``
subscription, or it changes nothing at all. Rows are rejected, with the reason,
when a field is missing or malformed, when the number opted out (an import never
overrides an opt-out) and when the number was erased (only its owner can opt in
again, by texting). A number already active is left as it is. A row imported
before (same content, whatever the file) is recognised by a keyed hash of its
content and adds nothing, so importing a file twice is harmless.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.consent.service import change_in_session, run_locked
from app.core import flows
from app.core.consent_plan import ConsentPlan, LoadedState, SubscriptionRow, seal, texts_of
from app.core.keywords import LANGUAGES, OPT_IN
from app.core.ledger_hashing import EventKind, NewEvent
from app.core.phones import contains_phone_number, parse_phone, phone_candidates
from app.core.places import normalize_state, normalize_zip
from app.core.programs import Catalog
from app.ledger.suppression import suppressed_at
from app.store.db import Database
from app.store.models import ImportedRow
from app.store.profiles import IMPORT_SOURCE, set_profile

logger = logging.getLogger(__name__)

IMPORT = EventKind.IMPORT
REQUIRED_COLUMNS = ("phone", "program", "consented_at", "method", "disclosure_text")
OPTIONAL_COLUMNS = ("language", "keyword", "state", "zip", "purchased_on")
METHOD_MAX = 500
KEYWORD_MAX = 40

IMPORTED = "imported"
DUPLICATE = "duplicate"  # this very row was imported before
UNCHANGED = "unchanged"  # the number is already active in the program
REJECTED = "rejected"


class ImportFileError(ValueError):
    """The file as a whole cannot be read (nothing was imported)."""


class RowRejected(Exception):
    """One row cannot be imported; its transaction is rolled back."""


@dataclass(frozen=True)
class ImportRow:
    """One valid row of an import file."""

    line: int
    phone: str
    program_id: str
    consented_at: datetime
    method: str
    disclosure_text: str
    language: str | None
    keyword: str | None
    state: str | None = None
    zip_code: str | None = None
    purchased_on: date | None = None

    def fingerprint(self, key: bytes) -> str:
        """A keyed hash of the row's content: the same consent imported twice is one event."""
        content = [
            self.phone,
            self.program_id,
            self.consented_at.astimezone(UTC).isoformat(),
            self.method,
            self.disclosure_text,
            self.language,
            self.keyword,
        ]
        profile = [self.state, self.zip_code, self.purchased_on and self.purchased_on.isoformat()]
        if any(profile):  # rows without them keep the fingerprints they always had
            content.extend(profile)
        canonical = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class RowOutcome:
    """What became of one row (no personal data: the operator has the file)."""

    line: int
    outcome: str
    event_id: int | None = None
    reason: str | None = None


@dataclass
class ImportReport:
    """Every row's outcome, in file order."""

    rows: list[RowOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for row in self.rows if row.outcome == outcome)

    @property
    def rejected(self) -> int:
        return self.count(REJECTED)

    def summary(self) -> str:
        return (
            f"{len(self.rows)} rows: {self.count(IMPORTED)} imported, "
            f"{self.count(DUPLICATE)} already imported, {self.count(UNCHANGED)} already active, "
            f"{self.rejected} rejected"
        )


def decode_file(data: bytes) -> str:
    """The file's text; UTF-8 (a byte-order mark from a spreadsheet is fine)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"the file is not UTF-8 text (byte {exc.start})") from exc


def parse_rows(
    text: str, catalog: Catalog, now: datetime, region: str = "US"
) -> Iterator[ImportRow | RowOutcome]:
    """Each data row of the CSV `text`, checked: an `ImportRow`, or a rejected `RowOutcome`."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ImportFileError(
            "the header row lacks the column(s) "
            + ", ".join(missing)
            + " (required: "
            + ", ".join(REQUIRED_COLUMNS)
            + "; optional: "
            + ", ".join(OPTIONAL_COLUMNS)
            + ")"
        )
    reader.fieldnames = header
    try:
        for record in reader:
            line = reader.line_num
            if not any((value or "").strip() for key, value in record.items() if key):
                continue  # a blank line
            try:
                yield check_row(line, record, catalog, now, region)
            except RowRejected as rejection:
                yield RowOutcome(line, REJECTED, reason=str(rejection))
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num}: not valid CSV ({exc})") from exc


def read_phone(raw: str, region: str) -> str | None:
    """The E.164 number a cell means, or None when it is not one or could mean two.

    "+1 415 555 0100" and "14155550100" are international; "(415) 555-0100" is read
    in `region`. A cell with both readings valid is refused rather than guessed at:
    a wrong guess would text a stranger.
    """
    candidates = [c for c in phone_candidates(raw, region) if parse_phone(c) == c]
    candidates = [c for c in candidates if c.startswith("+")]
    return candidates[0] if len(candidates) == 1 else None


def check_row(
    line: int, record: dict, catalog: Catalog, now: datetime, region: str = "US"
) -> ImportRow:
    """Validate one CSV record; raise `RowRejected` with every problem found."""
    problems: list[str] = []
    if record.get(None):
        problems.append("more cells than columns")

    def value(name: str) -> str:
        return (record.get(name) or "").strip()

    phone = read_phone(value("phone"), region) if value("phone") else None
    if not value("phone"):
        problems.append("phone is empty")
    elif phone is None:
        problems.append("phone is not a phone number (or is ambiguous: write it as E.164)")
    program_id = value("program")
    if not program_id:
        problems.append("program is empty")
    elif catalog.get(program_id) is None:
        problems.append(f"program {program_id!r} does not exist")
    consented_at = None
    if not value("consented_at"):
        problems.append("consented_at is empty")
    else:
        try:
            consented_at = datetime.fromisoformat(value("consented_at"))
        except ValueError:
            problems.append("consented_at is not an ISO 8601 time")
        else:
            if consented_at.tzinfo is None:
                problems.append("consented_at has no time zone (add Z or an offset)")
                consented_at = None
            elif consented_at > now:
                problems.append("consented_at is in the future")
    method = " ".join(value("method").split())
    if not method:
        problems.append("method is empty: say how consent was given")
    elif len(method) > METHOD_MAX:
        problems.append(f"method is longer than {METHOD_MAX} characters")
    elif contains_phone_number(method, phone, region):
        problems.append("method must not contain a phone number (it is kept in the ledger)")
    disclosure = value("disclosure_text")
    if not disclosure:
        problems.append("disclosure_text is empty: the text shown is part of the evidence")
    language = value("language").lower() or None
    if language and language not in LANGUAGES:
        problems.append(f"language must be one of {', '.join(LANGUAGES)}")
    keyword = value("keyword") or None
    if keyword and len(keyword) > KEYWORD_MAX:
        problems.append(f"keyword is longer than {KEYWORD_MAX} characters")
    state = normalize_state(value("state")) if value("state") else None
    if value("state") and state is None:
        problems.append("state is not a US state")
    zip_code = normalize_zip(value("zip")) if value("zip") else None
    if value("zip") and zip_code is None:
        problems.append("zip is not a 5-digit ZIP code")
    purchased_on = None
    if value("purchased_on"):
        try:
            purchased_on = date.fromisoformat(value("purchased_on"))
        except ValueError:
            problems.append("purchased_on is not a date (YYYY-MM-DD)")
        else:
            if purchased_on > now.date():
                problems.append("purchased_on is in the future")
    if problems:
        raise RowRejected("; ".join(problems))
    return ImportRow(
        line=line,
        phone=phone,
        program_id=program_id,
        consented_at=consented_at.astimezone(UTC),
        method=method,
        disclosure_text=disclosure,
        language=language,
        keyword=keyword,
        state=state,
        zip_code=zip_code,
        purchased_on=purchased_on,
    )


def _keep_profile(session: Session, subscriber_id: int, row: ImportRow, now: datetime) -> None:
    """The row's location and last purchase, for the sending rules (when it gives them)."""
    changes: dict = {}
    if row.state or row.zip_code:
        changes.update(state=row.state, zip_code=row.zip_code)
    if row.purchased_on:
        changes["purchased_on"] = row.purchased_on
    if changes:
        set_profile(session, subscriber_id, source=IMPORT_SOURCE, now=now, **changes)


def import_row(
    database: Database, row: ImportRow, *, source: str, key: bytes, now: datetime
) -> RowOutcome:
    """Import one checked row under the number's lock, in a transaction of its own.

    Raises `RowRejected` (nothing written) to refuse it.
    """
    return run_locked(
        database,
        row.phone,
        lambda session: import_row_in_session(session, row, source=source, key=key, now=now),
    )


def import_row_in_session(
    session: Session, row: ImportRow, *, source: str, key: bytes, now: datetime
) -> RowOutcome:
    """Import one checked row in the caller's transaction, which holds the number's lock."""
    fingerprint = row.fingerprint(key)
    earlier = session.execute(
        select(ImportedRow.event_id).where(ImportedRow.row_hmac == fingerprint)
    ).scalar_one_or_none()
    if earlier is not None:
        return RowOutcome(row.line, DUPLICATE, event_id=earlier, reason="imported before")
    if suppressed_at(session, key, row.phone) is not None:
        raise RowRejected(
            "the number was erased at its owner's request: only they can opt in again, by texting"
        )

    def plan(state: LoadedState, session: Session) -> ConsentPlan | None:
        current = state.subscriptions.get(row.program_id)
        before = current.status if current else flows.NONE
        if before == flows.OPTED_OUT:
            raise RowRejected(
                "the number opted out of this program: an import never overrides an opt-out"
            )
        _keep_profile(session, state.subscriber_id, row, now)
        if before == flows.ACTIVE:
            return None
        return plan_import(state, row, before, source=source, now=now)

    change = change_in_session(session, row.phone, plan, now=now)
    if change is None:
        return RowOutcome(row.line, UNCHANGED, reason="already active")
    session.add(
        ImportedRow(
            row_hmac=fingerprint,
            event_id=change.event_id,
            subscriber_id=change.state.subscriber_id,
            source=source,
            imported_at=now,
        )
    )
    return RowOutcome(row.line, IMPORTED, event_id=change.event_id)


def plan_import(
    state: LoadedState, row: ImportRow, before: str, *, source: str, now: datetime
) -> ConsentPlan:
    """An ``import`` event at the time consent was given, and the subscription made active,
    confirmed then."""
    change = flows.StatusChange(row.program_id, before, flows.ACTIVE)
    how = f"consent by {row.method}" + (f", keyword {row.keyword}" if row.keyword else "")
    texts = texts_of(row.disclosure_text)
    event = seal(
        state,
        NewEvent(
            kind=IMPORT,
            occurred_at=row.consented_at,
            intent=OPT_IN,
            rule=IMPORT,
            language=row.language,
            program_id=row.program_id,
            status_before=before,
            status_after=flows.ACTIVE,
            changes=[change.as_record()],
            disclosure_sha256=next(iter(texts)),
            actor=source,
            note=f"imported from {source} on {now.astimezone(UTC).isoformat()}: {how}",
        ),
        row.phone,
    )
    return ConsentPlan(
        event=event,
        intent=OPT_IN,
        phone=row.phone,
        subscriber_language=state.language,
        subscriptions=[
            SubscriptionRow(
                program_id=row.program_id,
                status=flows.ACTIVE,
                since=row.consented_at,
                pending_since=None,
                confirmed_at=row.consented_at,
                language=row.language,
            )
        ],
        outbound=[],
        texts=texts,
        recorded_at=now,
    )


def import_file(
    database: Database,
    data: bytes,
    catalog: Catalog,
    *,
    source: str,
    key: bytes,
    now: datetime,
    region: str = "US",
) -> ImportReport:
    """Import every row of a CSV file, each row in its own transaction; report each row.

    The whole file is decoded and its header checked first (`ImportFileError`
    before anything is written); after that a bad row only ever rejects itself.
    """
    source = " ".join(source.split())[:200]
    if not source:
        raise ImportFileError("a source is required: where the list and its evidence came from")
    text = decode_file(data)
    report = ImportReport()
    for item in list(parse_rows(text, catalog, now, region)):
        if isinstance(item, RowOutcome):
            report.rows.append(item)
            continue
        outcome = None
        for attempt in range(2):
            try:
                outcome = import_row(database, item, source=source, key=key, now=now)
                break
            except RowRejected as rejection:
                outcome = RowOutcome(item.line, REJECTED, reason=str(rejection))
                break
            except IntegrityError:
                # Another import wrote this very row (or this number) first: try once more,
                # and the second attempt sees what it wrote.
                if attempt:
                    raise
        report.rows.append(outcome)
    logger.info(
        "import finished",
        extra={
            "rows": len(report.rows),
            "imported": report.count(IMPORTED),
            "rejected": report.rejected,
        },
    )
    return report
