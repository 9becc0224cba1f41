"""osteo: hip X-ray + DEXA osteoporosis screening pipeline (application layer: settings, ETL, CLI)."""

__version__ = "0.1.0"
