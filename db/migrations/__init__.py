"""Alembic's scripts for osteo's schema (env.py, versions/), run through db.migrate; no alembic.ini."""
