"""Who may do what: staff accounts, API tokens and the access audit log."""
