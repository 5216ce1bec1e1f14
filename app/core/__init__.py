"""The pure core: keyword reading, the status machine, ledger hashing, programs and phone numbers.
Imports neither Flask nor SQLAlchemy nor the storage layer (tests/test_layers.py).
"""
