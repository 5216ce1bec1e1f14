"""The consent ledger in the database: appending, verifying, and the suppression list beside it."""
