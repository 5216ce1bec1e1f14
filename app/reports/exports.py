"""Export formats for event searches: CSV and JSON, streamed, with a running SHA-256.

Pure: rows in, bytes out. The caller streams the chunks to the client and,
once the last chunk is out, records the digest in the access audit log.

CSV cells that a spreadsheet would run as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) get a leading apostrophe, as OWASP
recommends against CSV injection; a subscriber's text "=HYPERLINK(…)" then shows
as text instead of running.

Phone numbers would all start with ``+`` and so all get the apostrophe, and then
match nothing in a spreadsheet. So the CSV carries them as E.164 digits without
the ``+`` (`phone_e164_digits`, `to_e164_digits`: ``14155550100``): digits alone
can never start a formula, a spreadsheet reads them as they are, and putting
``+`` back in front gives E.164. (The JSON export keeps E.164 with its ``+``.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 500
# Numbers in the CSV: E.164 without its "+" (see the module's docstring).
CSV_NUMBER_COLUMNS = {"phone": "phone_e164_digits", "to": "to_e164_digits"}


def e164_digits(value: str | None) -> str | None:
    """ "+14155550100" → "14155550100"; a short code stays as it is; a sender name too (and is
    neutralised like any other cell)."""
    if value and value.startswith("+") and value[1:].isdigit():
        return value[1:]
    return value


def csv_columns(columns: Sequence[str]) -> tuple[str, ...]:
    """The export's columns as the CSV names them."""
    return tuple(CSV_NUMBER_COLUMNS.get(column, column) for column in columns)


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the CSV writes it: numbers as E.164 digits, under their CSV names."""
    out = dict(row)
    for column, renamed in CSV_NUMBER_COLUMNS.items():
        if column in out:
            out[renamed] = e164_digits(out.pop(column))
    return out


def neutralize_cell(value: Any) -> str:
    """A value as a CSV cell that a spreadsheet shows as text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


class DigestingStream:
    """Wraps chunks of bytes, counting rows and hashing what passes through."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.rows = 0
        self.finished = False

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()

    def _out(self, chunk: str) -> bytes:
        data = chunk.encode("utf-8")
        self.sha256.update(data)
        return data


def csv_chunks(
    rows: Iterable[dict[str, Any]], columns: Sequence[str], stream: DigestingStream
) -> Iterator[bytes]:
    """The rows as CSV (RFC 4180, CRLF line ends), a chunk every `CHUNK_ROWS` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([neutralize_cell(row.get(column)) for column in columns])
        stream.rows += 1
        if stream.rows % CHUNK_ROWS == 0:
            yield stream._out(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()
    yield stream._out(buffer.getvalue())
    stream.finished = True


def json_chunks(
    rows: Iterable[dict[str, Any]],
    stream: DigestingStream,
    *,
    header: dict[str, Any] | None = None,
) -> Iterator[bytes]:
    """The rows as one JSON document ``{…header, "events": [...]}``, streamed."""
    opening = json.dumps(header or {}, ensure_ascii=False)[:-1]
    opening += (", " if header else "") + '"events": ['
    yield stream._out(opening)
    parts: list[str] = []
    for row in rows:
        parts.append(("," if stream.rows else "") + "\n" + json.dumps(row, ensure_ascii=False))
        stream.rows += 1
        if stream.rows % CHUNK_ROWS == 0:
            yield stream._out("".join(parts))
            parts = []
    parts.append("\n]}\n")
    yield stream._out("".join(parts))
    stream.finished = True
