"""The benchmark suite's own arithmetic (bench/): windows, percentiles, request files."""

from __future__ import annotations

import struct
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from bench.common import percentile
from bench.pacing import busiest_window
from bench.webhooks import write_requests


def test_busiest_window_counts_arrivals_in_any_one_second():
    assert busiest_window([]) == 0
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0.5, 1.5) holds 0.5, 0.99, 1.0
    evenly = [i * 10 for i in range(300)]  # in milliseconds: 100 per second, exactly
    assert busiest_window(evenly, width=1000) == 100
    assert busiest_window([*evenly, 1234.5], width=1000) == 101


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 100) == 100
    assert percentile([], 50) is None


def test_request_files_hold_distinct_correctly_signed_webhooks(tmp_path):
    path = tmp_path / "requests.bin"
    sids = write_requests(
        path, count=50, base_url="http://127.0.0.1:8000", auth_token="tok", numbers=10
    )
    data = path.read_bytes()
    requests, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<I", data[at : at + 4])
        requests.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    assert len(requests) == 50 and len(set(sids)) == 50
    head, body = requests[0].split(b"\r\n\r\n", 1)
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    params = dict(parse_qsl(body.decode()))
    assert params["MessageSid"] == sids[0]
    assert int(headers["Content-Length"]) == len(body)
    validator = RequestValidator("tok")
    assert validator.validate(
        "http://127.0.0.1:8000/twilio/sms", params, headers["X-Twilio-Signature"]
    )


def test_shipped_variants_are_the_shipped_config_plus_one_change(tmp_path):
    from bench.shipped import SHIPPED_CONF, VARIANTS, config_file

    shipped = SHIPPED_CONF.read_text(encoding="utf-8")
    for name, (_wsgi, overrides) in VARIANTS.items():
        text = config_file(tmp_path, name, overrides).read_text(encoding="utf-8")
        if overrides is None:  # the ceiling: plain gunicorn, no access log, sync workers
            assert shipped not in text and "worker_class = 'sync'" in text
        else:
            assert text.index(shipped) < text.rindex(overrides or shipped[-10:])
