"""osteo_model: the PyTorch side of osteo (splits, augmentation, data, models, training,
metrics, Grad-CAM, prediction).

Plain functions with their collaborators passed in (device, callbacks); it imports neither
Prefect, MLflow, SQLAlchemy nor anything from db/, flows/ or tasks/. Importing this package
is cheap: submodules are imported on demand (``from osteo_model.train import fit``).
"""

__all__ = [
    "augment",
    "data",
    "gradcam",
    "metrics",
    "models",
    "predict",
    "splits",
    "train",
]
