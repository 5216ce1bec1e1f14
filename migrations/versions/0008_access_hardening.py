"""access hardening: enrolment links, encrypted TOTP seeds, scoped API tokens, key records

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-02

- Staff set their own credentials through single-use enrolment links
  (`staff_enrolments`); `staff_users.totp_secret` becomes `totp_seed_encrypted`
  (Fernet ciphertext; `flask --app app db upgrade` encrypts seeds still in clear).
  Lockout (`failed_logins`, `locked_until`) gives way to throttling, which keeps
  its counts in the rate limiter's storage, not here.
- API tokens get scopes (NULL: a token from before scopes, read scopes only), an
  optional expiry and who made them; the access audit log names the API token.
- `key_records` keeps the suppression list's data key, wrapped under
  SUPPRESSION_KEY, and that key's fingerprint.
"""

from alembic import op
import sqlalchemy as sa


revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    enrolled = sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True)
    changed = sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True)
    if sqlite:
        # SQLite cannot change a column's type in place: the table is copied (it has no
        # triggers; the migration's connection does not enforce foreign keys meanwhile).
        with op.batch_alter_table("staff_users", recreate="always") as batch_op:
            batch_op.alter_column(
                "totp_secret",
                new_column_name="totp_seed_encrypted",
                type_=sa.String(length=255),
                existing_nullable=True,
            )
            batch_op.drop_column("failed_logins")
            batch_op.drop_column("locked_until")
            batch_op.add_column(enrolled)
            batch_op.add_column(changed)
    else:
        op.alter_column(
            "staff_users",
            "totp_secret",
            new_column_name="totp_seed_encrypted",
            type_=sa.String(length=255),
            existing_nullable=True,
        )
        op.drop_column("staff_users", "failed_logins")
        op.drop_column("staff_users", "locked_until")
        op.add_column("staff_users", enrolled)
        op.add_column("staff_users", changed)
    op.execute("UPDATE staff_users SET enrolled_at = created_at, password_changed_at = created_at")

    op.create_table(
        "staff_enrolments",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("staff_id", BigId, nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("created_by", sa.String(length=254), nullable=True),
        sa.Column("pending_seed_encrypted", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["staff_id"], ["staff_users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_staff_enrolments_staff_id", "staff_enrolments", ["staff_id"])

    # Plain ADD COLUMN, never a batch copy: a copied staff_audit would lose its triggers.
    op.add_column("api_tokens", sa.Column("scopes", sa.String(length=200), nullable=True))
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_tokens", sa.Column("created_by", sa.String(length=254), nullable=True))
    op.add_column("staff_audit", sa.Column("api_token_id", BigId, nullable=True))

    op.create_table(
        "key_records",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_table("key_records")
    op.drop_column("staff_audit", "api_token_id")
    op.drop_column("api_tokens", "created_by")
    op.drop_column("api_tokens", "expires_at")
    op.drop_column("api_tokens", "scopes")
    op.drop_index("ix_staff_enrolments_staff_id", table_name="staff_enrolments")
    op.drop_table("staff_enrolments")
    # Encrypted seeds cannot go back to clear text here: those accounts must enrol again.
    op.execute("UPDATE staff_users SET totp_seed_encrypted = NULL")
    if sqlite:
        with op.batch_alter_table("staff_users", recreate="always") as batch_op:
            batch_op.drop_column("password_changed_at")
            batch_op.drop_column("enrolled_at")
            batch_op.add_column(
                sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
            )
            batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True)))
            batch_op.alter_column(
                "totp_seed_encrypted",
                new_column_name="totp_secret",
                type_=sa.String(length=64),
                existing_nullable=True,
            )
    else:
        op.drop_column("staff_users", "password_changed_at")
        op.drop_column("staff_users", "enrolled_at")
        op.add_column(
            "staff_users",
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
        )
        op.add_column(
            "staff_users", sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True)
        )
        op.alter_column(
            "staff_users",
            "totp_seed_encrypted",
            new_column_name="totp_secret",
            type_=sa.String(length=64),
            existing_nullable=True,
        )
