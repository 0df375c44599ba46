"""Alembic migrations of the records database, shipped in the package (records/migrate.py)."""
