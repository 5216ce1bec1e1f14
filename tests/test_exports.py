"""Export formats (app.reports.exports): formula neutralising, streaming, digests."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

from app.reports.exports import DigestingStream, csv_chunks, json_chunks, neutralize_cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+14155550100", "'+14155550100"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("STOP", "STOP"),
        ("a=1", "a=1"),
        (None, ""),
        (True, "true"),
        (42, "42"),
    ],
)
def test_neutralize_cell(value, cell):
    assert neutralize_cell(value) == cell


def rows(n):
    for i in range(n):
        yield {"id": i, "body": f'=cmd|"/c calc"!A{i}', "phone": "+1415555" + f"{i:04d}"}


def test_csv_streams_in_chunks_and_hashes_what_it_sent():
    stream = DigestingStream()
    chunks = list(csv_chunks(rows(1200), ["id", "phone", "body"], stream))
    assert len(chunks) >= 3  # streamed, not built in one piece
    data = b"".join(chunks)
    assert stream.rows == 1200 and stream.finished
    assert stream.hexdigest == hashlib.sha256(data).hexdigest()
    parsed = list(csv.reader(io.StringIO(data.decode())))
    assert parsed[0] == ["id", "phone", "body"]
    assert parsed[1] == ["0", "'+14155550000", '\'=cmd|"/c calc"!A0']


def test_json_is_one_valid_document():
    stream = DigestingStream()
    data = b"".join(json_chunks(rows(1001), stream, header={"query": {"intent": "other"}}))
    document = json.loads(data)
    assert document["query"] == {"intent": "other"}
    assert len(document["events"]) == 1001 and document["events"][0]["id"] == 0
    assert stream.hexdigest == hashlib.sha256(data).hexdigest()


def test_empty_exports_are_still_valid():
    assert json.loads(b"".join(json_chunks([], DigestingStream()))) == {"events": []}
    assert b"".join(csv_chunks([], ["id"], DigestingStream())) == b"id\r\n"
