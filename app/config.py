"""Settings, read once from the environment when the app is created.

Everything an operator can set is listed in `.env.example` and in the README's
configuration table; the names are fixed by the service contract.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from datetime import date, time
from pathlib import Path
from typing import Any, Protocol

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_INSTANCE_DIR = PROJECT_DIR / "instance"
DEMO_PROGRAMS_FILE = PROJECT_DIR / "programs" / "demo.toml"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; raised at start-up, not at first use."""


class Parser(Protocol):
    def __call__(self, name: str, raw: str) -> Any: ...


class DataKeySource(Protocol):
    def data_key(self) -> bytes: ...


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


def _bool(_name: str, raw: str) -> bool:
    return raw.lower() in {"1", "true", "yes", "on"}


def _text(_name: str, raw: str) -> str:
    return raw


def _path(_name: str, raw: str) -> Path:
    return Path(raw)


def _url_base(_name: str, raw: str) -> str:
    return raw.rstrip("/")


def _upper(_name: str, raw: str) -> str:
    return raw.upper()


def _lower(_name: str, raw: str) -> str:
    return raw.lower()


def _csv(_name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _date(name: str, raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a date (YYYY-MM-DD), got {raw!r}") from exc


def _country_windows(name: str, raw: str) -> dict[str, tuple[time, time]]:
    """`*=08:00-21:00,GB=09:00-20:00`: the daily sending window per country (`*`: the rest)."""
    windows: dict[str, tuple[time, time]] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        country, _, span = part.partition("=")
        country = country.strip().upper()
        opens, _, closes = span.partition("-")
        try:
            window = (time.fromisoformat(opens.strip()), time.fromisoformat(closes.strip()))
        except ValueError as exc:
            raise ConfigError(f"{name}: {part!r} is not COUNTRY=HH:MM-HH:MM") from exc
        if not (country == "*" or (len(country) == 2 and country.isalpha())):
            raise ConfigError(f"{name}: {country!r} is not a two-letter country code or *")
        if window[0] >= window[1]:
            raise ConfigError(f"{name}: the window of {country} must open before it closes")
        windows[country] = window
    return windows


DEFAULT_COUNTRY_WINDOWS = {"*": (time(8), time(21))}


def _database_url(_name: str, raw: str) -> str:
    # Heroku-style platforms still hand out postgres:// URLs; SQLAlchemy wants a driver.
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def setting(
    env: str | None,
    default: Any = None,
    parse: Parser = _text,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a setting once: its environment variable, parser, default and bounds.

    An empty variable means "not set". A bound that fails stops the app at start
    (`Settings.validate`), naming the variable.
    """
    metadata = {
        "env": env,
        "parse": parse,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
    }
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The service's configuration, one declaration per setting. Build it with `from_env()`.

    A default of None on `database_url`, `sms_backend` and `ledger_checkpoint_dir` means
    "derived": a SQLite file in the instance folder, ``twilio`` when an account SID is
    set, and ``checkpoints/`` in the instance folder.
    """

    instance_dir: Path = setting("INSTANCE_DIR", DEFAULT_INSTANCE_DIR, _path)
    database_url: str = setting("DATABASE_URL", None, _database_url)
    # The tables' owner, for `db upgrade` only; the app itself connects as DATABASE_URL.
    migration_database_url: str | None = setting("MIGRATION_DATABASE_URL", None, _database_url)
    # The least-privilege role DATABASE_URL connects as; `db upgrade` grants it its privileges.
    app_database_role: str | None = setting("APP_DATABASE_ROLE")
    secret_key: str = setting("SECRET_KEY", "")
    sms_backend: str = setting("SMS_BACKEND", None, _lower)
    twilio_account_sid: str | None = setting("TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = setting("TWILIO_AUTH_TOKEN")
    twilio_auth_token_previous: str | None = setting("TWILIO_AUTH_TOKEN_PREVIOUS")
    twilio_messaging_service_sid: str | None = setting("TWILIO_MESSAGING_SERVICE_SID")
    twilio_from_number: str | None = setting("TWILIO_FROM_NUMBER")
    twilio_api_base_url: str = setting("TWILIO_API_BASE_URL", "https://api.twilio.com", _url_base)
    public_base_url: str | None = setting("PUBLIC_BASE_URL", None, _url_base)
    programs_file: Path = setting("PROGRAMS_FILE", DEMO_PROGRAMS_FILE, _path)
    sender_mps: float = setting("SENDER_MPS", 10.0, _float, above=0)
    proxy_fix_x_for: int = setting("PROXY_FIX_X_FOR", 0, _int)
    proxy_fix_x_proto: int = setting("PROXY_FIX_X_PROTO", 0, _int)
    proxy_fix_x_host: int = setting("PROXY_FIX_X_HOST", 0, _int)
    proxy_fix_x_port: int = setting("PROXY_FIX_X_PORT", 0, _int)
    proxy_fix_x_prefix: int = setting("PROXY_FIX_X_PREFIX", 0, _int)
    twilio_http_timeout: float = setting("TWILIO_HTTP_TIMEOUT", 10.0, _float)
    sender_max_attempts: int = setting("SENDER_MAX_ATTEMPTS", 8, _int, minimum=1)
    sender_backoff_base: float = setting("SENDER_BACKOFF_BASE", 2.0, _float)
    sender_backoff_max: float = setting("SENDER_BACKOFF_MAX", 300.0, _float)
    sender_lease_seconds: float = setting("SENDER_LEASE_SECONDS", 60.0, _float, above=0)
    sender_poll_interval: float = setting("SENDER_POLL_INTERVAL", 0.1, _float, above=0)
    sender_threads: int = setting("SENDER_THREADS", 8, _int, minimum=1, maximum=256)
    max_request_bytes: int = setting("MAX_REQUEST_BYTES", 64 * 1024, _int)
    staff_idle_minutes: float = setting("STAFF_IDLE_MINUTES", 15.0, _float, above=0)
    staff_session_hours: float = setting("STAFF_SESSION_HOURS", 12.0, _float, above=0)
    staff_cookie_secure: bool = setting("STAFF_COOKIE_SECURE", True, _bool)
    staff_login_rate_limit: str = setting("STAFF_LOGIN_RATE_LIMIT", "10 per minute")
    ratelimit_storage_uri: str = setting("RATELIMIT_STORAGE_URI", "memory://")
    phone_default_region: str = setting("PHONE_DEFAULT_REGION", "US", _upper)
    suppression_key: str = setting("SUPPRESSION_KEY", "")
    suppression_key_previous: str = setting("SUPPRESSION_KEY_PREVIOUS", "")
    totp_encryption_key: str = setting("TOTP_ENCRYPTION_KEY", "")
    totp_encryption_key_previous: str = setting("TOTP_ENCRYPTION_KEY_PREVIOUS", "")
    staff_enrol_hours: float = setting("STAFF_ENROL_HOURS", 24.0, _float, above=0, maximum=720)
    api_rate_limit: str = setting("API_RATE_LIMIT", "600 per minute")
    ratelimit_key_prefix: str = setting("RATELIMIT_KEY_PREFIX", "scg")
    retention_body_days: int = setting("RETENTION_BODY_DAYS", 90, _int, minimum=1)
    evidence_retention_years: int = setting("EVIDENCE_RETENTION_YEARS", 5, _int, minimum=1)
    metrics_token: str | None = setting("METRICS_TOKEN")
    metrics_allowed_networks: tuple[str, ...] = setting("METRICS_ALLOWED_NETWORKS", (), _csv)
    ready_sender_max_age_seconds: float = setting(
        "READY_SENDER_MAX_AGE_SECONDS", 60.0, _float, minimum=0
    )
    sender_heartbeat_seconds: float = setting("SENDER_HEARTBEAT_SECONDS", 5.0, _float, above=0)
    revoke_all_from: date = setting("REVOKE_ALL_FROM", date(2027, 1, 31), _date)
    # While a possible opt-out awaits review, the number gets nothing but replies to its own
    # texts (app.consent.holds); 0 only reports the hold.
    review_holds_sends: bool = setting("REVIEW_HOLDS_SENDS", True, _bool)
    non_us_sending_windows: dict[str, tuple[time, time]] = setting(
        "NON_US_SENDING_WINDOWS",
        None,
        _country_windows,
        default_factory=lambda: dict(DEFAULT_COUNTRY_WINDOWS),
    )
    # The transparency log over the ledger (app.ledger.transparency): the key never in the
    # database; the directory outside it, ideally write-once; an optional timestamp authority.
    ledger_signing_key: str = setting("LEDGER_SIGNING_KEY", "")
    ledger_checkpoint_dir: Path = setting("LEDGER_CHECKPOINT_DIR", None, _path)
    ledger_tsa_url: str | None = setting("LEDGER_TSA_URL")
    ledger_checkpoint_minutes: float = setting("LEDGER_CHECKPOINT_MINUTES", 60.0, _float, above=0)
    testing: bool = setting("TESTING", False, _bool)
    debug: bool = setting("FLASK_DEBUG", False, _bool)
    extra: dict[str, str] = setting(None, default_factory=dict)
    # Opens the suppression list's data key (app.ledger.suppression_keys); set by create_app.
    suppression_keyring: DataKeySource | None = setting(None, None)

    @property
    def owner_database_url(self) -> str:
        """The URL `db upgrade` connects with: MIGRATION_DATABASE_URL, else DATABASE_URL."""
        return self.migration_database_url or self.database_url

    @property
    def auth_tokens(self) -> list[str]:
        """Every token a webhook signature may be made with: current first, then previous."""
        return [t for t in (self.twilio_auth_token, self.twilio_auth_token_previous) if t]

    @property
    def suppression_hmac_key(self) -> bytes:
        """The key of the suppression list's keyed hashes (and of import fingerprints and the
        audit log's number hashes): the data key recorded in the database, opened with
        SUPPRESSION_KEY (`app.ledger.suppression_keys`). Never derived from SECRET_KEY, so
        rotating SECRET_KEY leaves the suppression list intact."""
        if self.suppression_keyring is None:
            raise ConfigError("the suppression key is opened by create_app()")
        return self.suppression_keyring.data_key()

    @property
    def totp_encryption_keys(self) -> list[str]:
        """The keys TOTP seeds are encrypted with: current first, then previous (re-keying)."""
        return [k for k in (self.totp_encryption_key, self.totp_encryption_key_previous) if k]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, overrides: dict | None = None) -> Settings:
        """Read settings from `env` (default `os.environ`), then apply `overrides`.

        Each field is read through its declaration (`setting`); missing required
        secrets and values out of bounds fail here, when the app starts.
        """
        env = dict(os.environ if env is None else env)
        overrides = dict(overrides or {})
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = spec.metadata.get("env")
            if spec.name in overrides:
                values[spec.name] = overrides.pop(spec.name)
                continue
            raw = (env.get(name) or "").strip() if name else ""
            if raw:
                values[spec.name] = spec.metadata["parse"](name, raw)
        values.update(overrides)  # unknown names: the dataclass refuses them
        if not values.get("database_url"):
            instance_dir = Path(values.get("instance_dir") or DEFAULT_INSTANCE_DIR)
            values["database_url"] = f"sqlite:///{instance_dir / 'gateway.sqlite3'}"
        if not values.get("ledger_checkpoint_dir"):
            instance_dir = Path(values.get("instance_dir") or DEFAULT_INSTANCE_DIR)
            values["ledger_checkpoint_dir"] = instance_dir / "checkpoints"
        if not values.get("sms_backend"):
            values["sms_backend"] = "twilio" if values.get("twilio_account_sid") else "console"
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Fail fast on settings that cannot work."""
        for spec in fields(self):
            self._check_bounds(spec, getattr(self, spec.name))
        if self.sms_backend not in {"twilio", "console"}:
            raise ConfigError(
                f"SMS_BACKEND must be 'twilio' or 'console', got {self.sms_backend!r}"
            )
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
        if self.sms_backend == "twilio" and not self.testing:
            # Console mode (the local demo) keeps generated keys in instance/; a real
            # deployment must hold its own, or a lost instance/ would lose them.
            for name, value in (
                ("SUPPRESSION_KEY", self.suppression_key),
                ("TOTP_ENCRYPTION_KEY", self.totp_encryption_key),
            ):
                if not value:
                    raise ConfigError(f"{name} is required outside console mode")
        self._check_totp_keys()
        if self.public_base_url and not self.public_base_url.startswith(("http://", "https://")):
            raise ConfigError("PUBLIC_BASE_URL must start with http:// or https://")
        if self.public_base_url and ("#" in self.public_base_url or "?" in self.public_base_url):
            # Connection overrides (#rc=…) belong in the URL set in Twilio's console; the
            # fragment never reaches us, so it must not be part of the URL we rebuild.
            raise ConfigError(
                "PUBLIC_BASE_URL is the scheme and host only: no '#' fragment or '?' query"
            )
        if self.ledger_tsa_url and not self.ledger_tsa_url.startswith(("http://", "https://")):
            raise ConfigError("LEDGER_TSA_URL must start with http:// or https://")
        for network in self.metrics_allowed_networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"METRICS_ALLOWED_NETWORKS: {network!r} is not an address or network"
                ) from exc

    def _check_totp_keys(self) -> None:
        from cryptography.fernet import Fernet

        for name, value in (
            ("TOTP_ENCRYPTION_KEY", self.totp_encryption_key),
            ("TOTP_ENCRYPTION_KEY_PREVIOUS", self.totp_encryption_key_previous),
        ):
            try:
                if value:
                    Fernet(value.encode("ascii"))
            except (ValueError, UnicodeEncodeError) as error:
                raise ConfigError(
                    f"{name} must be 32 bytes in url-safe base64 (make one with: python -c "
                    "'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())')"
                ) from error

    @staticmethod
    def _check_bounds(spec: Field, value: Any) -> None:
        name = spec.metadata.get("env") or spec.name
        minimum, maximum, above = (spec.metadata.get(k) for k in ("minimum", "maximum", "above"))
        if above is not None and value <= above:
            raise ConfigError(f"{name} must be greater than {'zero' if above == 0 else above}")
        if minimum is not None and value < minimum:
            if maximum is not None:
                raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}")
            raise ConfigError(f"{name} must be at least {minimum:g}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be between {minimum:g} and {maximum:g}")


def instance_dir_ready(instance_dir: Path) -> Path:
    """The instance folder, created readable by this user only (0700).

    It holds the SQLite database (numbers, bodies, encrypted seeds) and, in console
    mode, generated secrets; an existing folder of ours is tightened to 0700 too.
    """
    instance_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = instance_dir.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(instance_dir, 0o700)
    return instance_dir


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if absent (before SQLite or anyone writes to it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def write_private(path: Path, value: str) -> bool:
    """Write `value` to a new file that is 0600 from its first byte; False if it exists."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(value)
    return True


def instance_secret(
    instance_dir: Path, name: str, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> str:
    """A random secret kept in the instance folder, made on first use.

    Used only by the local console set-up (and tests) so `make run` and `simulate`
    agree on a webhook signing token, a session key and the data keys without
    anyone inventing one. Each file is 0600 from its first byte (O_EXCL: two
    processes starting together keep one value).
    """
    instance_dir_ready(instance_dir)
    path = instance_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = make()
    if not write_private(path, value):
        return path.read_text().strip()
    return value
