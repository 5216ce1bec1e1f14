"""RFC 3161 timestamps over checkpoints, from a timestamp authority (`LEDGER_TSA_URL`).

A token from an outside TSA proves the checkpoint existed at that time, even to
someone who distrusts our clock and our key. The request and response are built
and parsed by `rfc3161-client`; we check that the answer is granted and is about
our checkpoint (our SHA-256 and our nonce) before keeping it. Checking the TSA's
certificate chain is for whoever relies on the token, with the TSA's root
certificate (e.g. ``openssl ts -verify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import requests
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    decode_timestamp_response,
)

SHA256_OID = "2.16.840.1.101.3.4.2.1"
TSA_TIMEOUT_SECONDS = 10.0


class TimestampError(RuntimeError):
    """The TSA gave no usable timestamp."""


@dataclass(frozen=True)
class TimestampInfo:
    """What a stored timestamp response says about the data it was made for."""

    gen_time: datetime
    serial_number: int
    covers_data: bool


def request_timestamp(url: str, data: bytes, *, timeout: float = TSA_TIMEOUT_SECONDS) -> bytes:
    """A TimeStampResp (DER) over SHA-256(`data`), checked to be granted and about `data`."""
    request = (
        TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    try:
        answer = requests.post(
            url,
            data=request.as_bytes(),
            headers={
                "Content-Type": "application/timestamp-query",
                "Accept": "application/timestamp-reply",
            },
            timeout=timeout,
        )
    except requests.RequestException as error:
        raise TimestampError(f"the TSA could not be reached: {type(error).__name__}") from error
    if answer.status_code != 200:
        raise TimestampError(f"the TSA answered HTTP {answer.status_code}")
    try:
        response = decode_timestamp_response(answer.content)
    except ValueError as error:
        raise TimestampError("the TSA's answer is not an RFC 3161 response") from error
    if response.status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(f"the TSA refused the request (status {response.status})")
    if response.tst_info.nonce != request.nonce:
        raise TimestampError("the TSA's answer is for another request (nonce differs)")
    if describe_timestamp(answer.content, data).covers_data is False:
        raise TimestampError("the TSA's answer is not about this checkpoint")
    return answer.content


def describe_timestamp(response_der: bytes, data: bytes) -> TimestampInfo:
    """Parse a stored TimeStampResp; does its message imprint match SHA-256(`data`)?"""
    try:
        response = decode_timestamp_response(response_der)
        info = response.tst_info
    except ValueError as error:
        raise TimestampError("not an RFC 3161 timestamp response") from error
    imprint = info.message_imprint
    covers = (
        imprint.hash_algorithm.dotted_string == SHA256_OID
        and imprint.message == hashlib.sha256(data).digest()
    )
    return TimestampInfo(info.gen_time, info.serial_number, covers)
