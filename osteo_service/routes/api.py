"""The JSON API: `POST /api/v1/predict` (score one radiograph) and `POST /api/v1/locate` (the
localiser's boxes for the page's box editor). Refusals are problem details (osteo_service.app)."""

from __future__ import annotations

import base64

import anyio.to_thread
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from osteo.etl.synthetic import synthetic_training
from osteo_model.gradcam import heatmap_png
from osteo_service.auth.guards import ScreeningRole
from osteo_service.deps import RequestForm, State
from osteo_service.image_decoding import decode_upload
from osteo_service.limits import UploadError
from osteo_service.routes.steps import image_of, run_screening
from osteo_service.schemas import MULTIPART, PROBLEM, LocatedOut, LocateOut, PredictOut, model_out, notice, predict_out
from osteo_service.screening import locate, preview

router = APIRouter(prefix="/api/v1", tags=["api"], responses={401: PROBLEM, 403: PROBLEM})
IMAGE_ONLY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {"image": {"type": "string", "format": "binary"}}}}}}}


@router.post("/predict", response_model=PredictOut, openapi_extra=MULTIPART)
async def api_predict(state: State, who: ScreeningRole, form: RequestForm) -> PredictOut:
    """Score one hip radiograph (or a femoral-neck crop with cropped=true): probability, label at the
    model's operating threshold, the box used and the Grad-CAM heat map."""
    model, decoded, result, heat = await run_screening(state, "api", image_of(form), form.fields,
                                                       lambda _d, r: heatmap_png(r.heatmap), who.audit_name)
    return predict_out(model, decoded, result, heat)


@router.post("/locate", response_model=LocateOut, openapi_extra=IMAGE_ONLY)
async def api_locate(state: State, who: ScreeningRole, form: RequestForm) -> LocateOut:
    """The whole image as the pipeline renders it and the femoral-neck boxes the localiser proposes
    (the page draws them for the user to move)."""
    data = image_of(form)
    model = state.served()
    if model is None:
        raise UploadError(503, "no_model", f"no model is registered as {state.settings.serve_model}")
    decoded = await run_in_threadpool(decode_upload, data, state.limits)
    found = await anyio.to_thread.run_sync(locate, decoded, model, limiter=state.infer)
    png, scale = await run_in_threadpool(preview, decoded.display)
    rows, cols = decoded.display.shape
    need = float(model.crop["min_confidence"])
    synthetic = synthetic_training(model.localiser_trained_on)  # the boxes are the localiser's alone
    return LocateOut(rows=rows, cols=cols, laterality=decoded.laterality, scale=scale,
                     preview_png=base64.b64encode(png).decode("ascii"),
                     boxes=[LocatedOut(side=f.side, box=[int(v) for v in f.box], confidence=float(f.confidence),
                                       confident=f.confidence >= need) for f in found],
                     localiser=model.localiser or None, model=model_out(model),
                     localiser_trained_on=model.localiser_trained_on, synthetic_training=synthetic,
                     notice=notice(synthetic))
