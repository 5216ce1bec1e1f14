"""Storage: the engine and sessions, the typed models, migrations and the consent writes' SQL.
Driver errors are mapped here.
"""
