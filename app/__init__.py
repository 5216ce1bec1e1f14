"""sms-consent-gateway: SMS keyword flows behind Twilio, with a tamper-evident consent ledger.

`create_app()` is the factory named in the service contract (`app:create_app()`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import timedelta
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import ConfigError, Settings, instance_dir_ready, instance_secret, private_file
from app.logs import ContextFormatter, configure_logging

__all__ = ["create_app", "ConfigError", "ContextFormatter", "configure_logging"]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the Flask app from the environment (and `.env`), or from `test_config` overrides.

    `test_config` holds `Settings` field overrides (e.g. ``{"database_url": ...}``)
    plus an optional ``"env"`` dict used instead of `os.environ`.
    """
    configure_logging()
    test_config = dict(test_config or {})
    env = test_config.pop("env", None)
    if env is None:
        _load_dotenv()
    settings = Settings.from_env(env, test_config)
    settings = _with_local_secrets(settings)
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        TESTING=settings.testing,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        # The staff console's cookie: only over HTTPS, never to scripts, never cross-site.
        SESSION_COOKIE_NAME="scg_session",
        SESSION_COOKIE_SECURE=settings.staff_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.staff_session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the (idle-limited) session
    )
    app.extensions["settings"] = settings

    if any(
        (
            settings.proxy_fix_x_for,
            settings.proxy_fix_x_proto,
            settings.proxy_fix_x_host,
            settings.proxy_fix_x_port,
            settings.proxy_fix_x_prefix,
        )
    ):
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.proxy_fix_x_for,
            x_proto=settings.proxy_fix_x_proto,
            x_host=settings.proxy_fix_x_host,
            x_port=settings.proxy_fix_x_port,
            x_prefix=settings.proxy_fix_x_prefix,
        )

    from limits.storage import storage_from_string

    from app.access.secrets import SeedCipher
    from app.access.throttle import SignInThrottle
    from app.core.programs import load_programs
    from app.core.sending_rules import rule_book
    from app.ledger.suppression_keys import SuppressionKeyring
    from app.outbox.twilio_gateway import build_gateway
    from app.store.db import Database

    if settings.database_url.startswith("sqlite:///"):
        try:
            database_file = Path(settings.database_url[len("sqlite:///") :])
            if database_file.parent == settings.instance_dir:
                instance_dir_ready(settings.instance_dir)
            else:
                database_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            private_file(database_file)  # numbers and bodies: 0600 before SQLite opens it
        except OSError:  # reported as "database unreachable" by /healthz and the webhooks
            logging.getLogger(__name__).warning("cannot create the SQLite database's folder")
    database = Database(settings.database_url)
    app.extensions["db"] = database
    keyring = SuppressionKeyring(
        database, settings.suppression_key, settings.suppression_key_previous
    )
    settings = dataclasses.replace(settings, suppression_keyring=keyring)
    app.extensions["settings"] = settings
    _check_suppression_key(keyring)
    app.extensions["seed_cipher"] = SeedCipher(settings.totp_encryption_keys)
    app.extensions["rate_storage"] = storage_from_string(settings.ratelimit_storage_uri)
    app.extensions["signin_throttle"] = SignInThrottle(
        app.extensions["rate_storage"], settings.ratelimit_key_prefix
    )
    app.extensions["programs"] = dataclasses.replace(
        load_programs(settings.programs_file), revoke_all_from=settings.revoke_all_from
    )
    app.extensions["sending_rules"] = rule_book(settings)
    app.extensions["sms_gateway"] = build_gateway(settings)
    from app.ledger.signing import load_ledger_key

    # Checkpoint signing key: read (and checked) at start, never put in the database.
    app.extensions["ledger_key"] = load_ledger_key(settings)

    from flask_wtf.csrf import CSRFProtect

    from app import cli, staff
    from app.web import api, health, metrics, request_ids, webhooks

    csrf = CSRFProtect(app)
    # Twilio's webhooks are signed, and the API takes bearer tokens, not cookies.
    csrf.exempt(webhooks.bp)
    csrf.exempt(api.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    request_ids.register(app)
    staff.register(app, csrf)
    cli.register(app)
    return app


def _with_local_secrets(settings: Settings) -> Settings:
    """Secrets the local console demo (and tests) may leave unset, kept in instance/.

    Outside console mode `Settings.validate` has already demanded SUPPRESSION_KEY and
    TOTP_ENCRYPTION_KEY (and SECRET_KEY), so nothing is generated for a real deployment.
    """
    from cryptography.fernet import Fernet

    extra: dict[str, str] = {}
    if not settings.secret_key:
        extra["secret_key"] = instance_secret(settings.instance_dir, "secret-key")
    if settings.sms_backend == "console" and not settings.auth_tokens:
        extra["twilio_auth_token"] = instance_secret(settings.instance_dir, "dev-auth-token")
    if not settings.suppression_key:
        extra["suppression_key"] = instance_secret(settings.instance_dir, "suppression-key")
    if not settings.totp_encryption_key:
        extra["totp_encryption_key"] = instance_secret(
            settings.instance_dir, "totp-key", lambda: Fernet.generate_key().decode("ascii")
        )
    return dataclasses.replace(settings, **extra) if extra else settings


def _check_suppression_key(keyring) -> None:
    """Refuse to start with a SUPPRESSION_KEY that does not open the recorded key.

    Under the `flask` command the check waits for the first use instead, so that
    `db upgrade` and `suppression adopt`/`rekey` can run to put things right; the
    commands that use the key (worker, erase, import) fail then, naming the problem.
    """
    from app.ledger.suppression_keys import SuppressionKeyError

    try:
        keyring.check_at_start()
    except SuppressionKeyError:
        if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
            raise


def _load_dotenv() -> None:
    """Read `.env` from the working directory when present; real environment wins."""
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a runtime dependency
        return
    load_dotenv(Path.cwd() / ".env", override=False)
