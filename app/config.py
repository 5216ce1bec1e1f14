"""Settings, read once from the environment when the app is created.

Everything an operator can set is listed in `.env.example` and in the README's
configuration table; the names are fixed by the service contract.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_INSTANCE_DIR = PROJECT_DIR / "instance"
DEMO_PROGRAMS_FILE = PROJECT_DIR / "programs" / "demo.toml"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; raised at start-up, not at first use."""


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """The service's configuration. Build it with `Settings.from_env()`."""

    database_url: str
    secret_key: str
    sms_backend: str
    twilio_account_sid: str | None
    twilio_auth_token: str | None
    twilio_auth_token_previous: str | None
    twilio_messaging_service_sid: str | None
    twilio_from_number: str | None
    twilio_api_base_url: str
    public_base_url: str | None
    programs_file: Path
    sender_mps: float
    instance_dir: Path
    proxy_fix_x_for: int = 0
    proxy_fix_x_proto: int = 0
    proxy_fix_x_host: int = 0
    proxy_fix_x_port: int = 0
    proxy_fix_x_prefix: int = 0
    twilio_http_timeout: float = 10.0
    sender_max_attempts: int = 8
    sender_backoff_base: float = 2.0
    sender_backoff_max: float = 300.0
    sender_lease_seconds: float = 60.0
    sender_poll_interval: float = 0.1
    sender_threads: int = 8
    max_request_bytes: int = 64 * 1024
    staff_idle_minutes: float = 15.0
    staff_session_hours: float = 12.0
    staff_cookie_secure: bool = True
    staff_login_rate_limit: str = "10 per minute"
    ratelimit_storage_uri: str = "memory://"
    phone_default_region: str = "US"
    suppression_key: str = ""
    retention_body_days: int = 90
    evidence_retention_years: int = 5
    metrics_token: str | None = None
    metrics_allowed_networks: tuple[str, ...] = ()
    ready_sender_max_age_seconds: float = 60.0
    sender_heartbeat_seconds: float = 5.0
    testing: bool = False
    debug: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def auth_tokens(self) -> list[str]:
        """Every token a webhook signature may be made with: current first, then previous."""
        return [t for t in (self.twilio_auth_token, self.twilio_auth_token_previous) if t]

    @property
    def suppression_hmac_key(self) -> bytes:
        """The key of the suppression list's keyed hashes: `SUPPRESSION_KEY`, else one derived
        from `SECRET_KEY` (so rotating SECRET_KEY without setting SUPPRESSION_KEY would forget
        every suppressed number: production sets SUPPRESSION_KEY once and keeps it)."""
        if self.suppression_key:
            return self.suppression_key.encode("utf-8")
        return hmac.new(
            self.secret_key.encode("utf-8"), b"sms-consent-gateway suppression key", "sha256"
        ).digest()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, overrides: dict | None = None) -> Settings:
        """Read settings from `env` (default `os.environ`), then apply `overrides`.

        Missing required secrets fail here, when the app starts.
        """
        env = dict(os.environ if env is None else env)
        overrides = dict(overrides or {})
        testing = bool(overrides.get("testing", _bool(env, "TESTING", False)))
        debug = bool(overrides.get("debug", _bool(env, "FLASK_DEBUG", False)))
        instance_dir = Path(
            overrides.get("instance_dir") or env.get("INSTANCE_DIR") or DEFAULT_INSTANCE_DIR
        )

        database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_dir / 'gateway.sqlite3'}"
        # Heroku-style platforms still hand out postgres:// URLs; SQLAlchemy wants a driver.
        if database_url.startswith("postgres://"):
            database_url = "postgresql+psycopg://" + database_url[len("postgres://") :]
        elif database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]

        account_sid = env.get("TWILIO_ACCOUNT_SID") or None
        sms_backend = (env.get("SMS_BACKEND") or ("twilio" if account_sid else "console")).lower()
        if sms_backend not in {"twilio", "console"}:
            raise ConfigError(f"SMS_BACKEND must be 'twilio' or 'console', got {sms_backend!r}")

        auth_token = env.get("TWILIO_AUTH_TOKEN") or None
        values: dict = dict(
            database_url=database_url,
            secret_key=env.get("SECRET_KEY") or "",
            sms_backend=sms_backend,
            twilio_account_sid=account_sid,
            twilio_auth_token=auth_token,
            twilio_auth_token_previous=env.get("TWILIO_AUTH_TOKEN_PREVIOUS") or None,
            twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            twilio_from_number=env.get("TWILIO_FROM_NUMBER") or None,
            twilio_api_base_url=(env.get("TWILIO_API_BASE_URL") or "https://api.twilio.com").rstrip(
                "/"
            ),
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            programs_file=Path(env.get("PROGRAMS_FILE") or DEMO_PROGRAMS_FILE),
            sender_mps=_float(env, "SENDER_MPS", 10.0),
            instance_dir=instance_dir,
            proxy_fix_x_for=_int(env, "PROXY_FIX_X_FOR", 0),
            proxy_fix_x_proto=_int(env, "PROXY_FIX_X_PROTO", 0),
            proxy_fix_x_host=_int(env, "PROXY_FIX_X_HOST", 0),
            proxy_fix_x_port=_int(env, "PROXY_FIX_X_PORT", 0),
            proxy_fix_x_prefix=_int(env, "PROXY_FIX_X_PREFIX", 0),
            twilio_http_timeout=_float(env, "TWILIO_HTTP_TIMEOUT", 10.0),
            sender_max_attempts=_int(env, "SENDER_MAX_ATTEMPTS", 8),
            sender_backoff_base=_float(env, "SENDER_BACKOFF_BASE", 2.0),
            sender_backoff_max=_float(env, "SENDER_BACKOFF_MAX", 300.0),
            sender_lease_seconds=_float(env, "SENDER_LEASE_SECONDS", 60.0),
            sender_poll_interval=_float(env, "SENDER_POLL_INTERVAL", 0.1),
            sender_threads=_int(env, "SENDER_THREADS", 8),
            max_request_bytes=_int(env, "MAX_REQUEST_BYTES", 64 * 1024),
            staff_idle_minutes=_float(env, "STAFF_IDLE_MINUTES", 15.0),
            staff_session_hours=_float(env, "STAFF_SESSION_HOURS", 12.0),
            staff_cookie_secure=_bool(env, "STAFF_COOKIE_SECURE", True),
            staff_login_rate_limit=env.get("STAFF_LOGIN_RATE_LIMIT") or "10 per minute",
            ratelimit_storage_uri=env.get("RATELIMIT_STORAGE_URI") or "memory://",
            phone_default_region=(env.get("PHONE_DEFAULT_REGION") or "US").upper(),
            suppression_key=env.get("SUPPRESSION_KEY") or "",
            retention_body_days=_int(env, "RETENTION_BODY_DAYS", 90),
            evidence_retention_years=_int(env, "EVIDENCE_RETENTION_YEARS", 5),
            metrics_token=env.get("METRICS_TOKEN") or None,
            metrics_allowed_networks=tuple(
                part.strip()
                for part in (env.get("METRICS_ALLOWED_NETWORKS") or "").split(",")
                if part.strip()
            ),
            ready_sender_max_age_seconds=_float(env, "READY_SENDER_MAX_AGE_SECONDS", 60.0),
            sender_heartbeat_seconds=_float(env, "SENDER_HEARTBEAT_SECONDS", 5.0),
            testing=testing,
            debug=debug,
        )
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Fail fast on settings that cannot work."""
        if not self.secret_key and not (self.testing or self.debug):
            # The console backend is the local demo: a per-instance key is good enough there.
            if self.sms_backend != "console":
                raise ConfigError("SECRET_KEY is required outside debug and test mode")
        if self.sms_backend == "twilio":
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                )
                if not value
            ]
            if missing:
                raise ConfigError(f"SMS_BACKEND=twilio needs {', '.join(missing)}")
        if self.sender_mps <= 0:
            raise ConfigError("SENDER_MPS must be greater than zero")
        if not 1 <= self.sender_threads <= 256:
            raise ConfigError("SENDER_THREADS must be between 1 and 256")
        if self.sender_max_attempts < 1:
            raise ConfigError("SENDER_MAX_ATTEMPTS must be at least 1")
        if self.sender_poll_interval <= 0 or self.sender_lease_seconds <= 0:
            raise ConfigError("SENDER_POLL_INTERVAL and SENDER_LEASE_SECONDS must be positive")
        if self.staff_idle_minutes <= 0 or self.staff_session_hours <= 0:
            raise ConfigError("STAFF_IDLE_MINUTES and STAFF_SESSION_HOURS must be positive")
        if self.retention_body_days < 1:
            raise ConfigError("RETENTION_BODY_DAYS must be at least 1")
        if self.evidence_retention_years < 1:
            raise ConfigError("EVIDENCE_RETENTION_YEARS must be at least 1")
        if self.public_base_url and not self.public_base_url.startswith(("http://", "https://")):
            raise ConfigError("PUBLIC_BASE_URL must start with http:// or https://")
        if self.public_base_url and ("#" in self.public_base_url or "?" in self.public_base_url):
            # Connection overrides (#rc=…) belong in the URL set in Twilio's console; the
            # fragment never reaches us, so it must not be part of the URL we rebuild.
            raise ConfigError(
                "PUBLIC_BASE_URL is the scheme and host only: no '#' fragment or '?' query"
            )
        for network in self.metrics_allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"METRICS_ALLOWED_NETWORKS: {network!r} is not an address or network"
                ) from exc
        if self.ready_sender_max_age_seconds < 0:
            raise ConfigError("READY_SENDER_MAX_AGE_SECONDS must be 0 (no check) or more")
        if self.sender_heartbeat_seconds <= 0:
            raise ConfigError("SENDER_HEARTBEAT_SECONDS must be positive")


def instance_secret(instance_dir: Path, name: str) -> str:
    """A random secret kept in the instance folder, made on first use.

    Used only by the local console set-up so `make run` and `simulate` agree on a
    webhook signing token and a session key without anyone inventing one.
    """
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    try:
        with open(path, "x") as fh:  # "x": two processes starting together keep one value
            fh.write(value)
        os.chmod(path, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    return value
