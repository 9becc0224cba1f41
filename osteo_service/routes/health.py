"""`GET /api/v1/health`: which model versions answer now, and what they learned from."""

from __future__ import annotations

from fastapi import APIRouter

from osteo import __version__
from osteo_service.auth.guards import Public
from osteo_service.deps import State
from osteo_service.schemas import HealthOut, model_out, notice

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.get("/health", response_model=HealthOut)
def health(state: State, who: Public) -> HealthOut:
    """Which model versions answer now."""
    model = state.served()
    settings = state.settings
    synthetic = model.synthetic_training() if model else None
    return HealthOut(status="ok" if model else "no_model", model=model_out(model) if model else None,
                     localiser=(model.localiser or None) if model else None, model_uri=settings.serve_model,
                     localiser_uri=settings.serve_localiser, reload_seconds=settings.serve_reload_seconds,
                     version=__version__, synthetic_training=synthetic, notice=notice(synthetic))
