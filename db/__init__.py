"""Database layer: SQLAlchemy 2 typed models, engine/session, named SQL (no Prefect, no MLflow)."""

from db.engine import create_schema, make_engine, make_session_factory
from db.models import Base
from db.session import session_factory

__all__ = ["Base", "create_schema", "make_engine", "make_session_factory", "session_factory"]
