"""Typed access to the per-app services that `create_app` builds.

Blueprints and CLI commands call these instead of reaching into
`current_app.extensions` themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from limits.storage import Storage

    from app.access.secrets import SeedCipher
    from app.access.throttle import SignInThrottle
    from app.config import Settings
    from app.core.programs import Catalog
    from app.core.sending_rules import RuleBook
    from app.ledger.signing import LedgerKey
    from app.outbox.twilio_gateway import SmsGateway
    from app.store.db import Database


def settings() -> Settings:
    return current_app.extensions["settings"]


def database() -> Database:
    return current_app.extensions["db"]


def programs() -> Catalog:
    return current_app.extensions["programs"]


def sms_gateway() -> SmsGateway:
    return current_app.extensions["sms_gateway"]


def seed_cipher() -> SeedCipher:
    return current_app.extensions["seed_cipher"]


def signin_throttle() -> SignInThrottle:
    return current_app.extensions["signin_throttle"]


def rate_storage() -> Storage:
    return current_app.extensions["rate_storage"]


def sending_rules() -> RuleBook:
    return current_app.extensions["sending_rules"]


def ledger_key() -> LedgerKey | None:
    """The checkpoint signing key, when this process has one (`LEDGER_SIGNING_KEY`)."""
    return current_app.extensions["ledger_key"]
