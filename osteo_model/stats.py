"""What a training measures, typed: one epoch's training pass (EpochStats), one evaluation pass (EvalStats)
and the fit's record of an epoch (EpochRecord, its history and what `on_epoch` receives).

Frozen hand-offs from osteo_model.train to the fold loop (osteo/training/folds.py), MLflow
(osteo_mlflow/runs.py) and bench/; no torch here, so every layer above reads them without loading it.
A record becomes a flat dict only where one is written: fold-k.json and the fold's MLflow metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class EpochStats:
    """One pass over the training loader (osteo_model.train.train_one_epoch)."""

    loss: float  # mean loss per image
    accuracy: float  # the logit's sign against the label (threshold 0.5)
    n: int  # images seen
    seconds: float


# eq=False: numpy arrays have no single truth value, so field-wise equality would raise
@dataclass(frozen=True, slots=True, eq=False)
class EvalStats:
    """One pass over an evaluation loader in eval mode (osteo_model.train.evaluate)."""

    loss: float  # mean loss per image; NaN for an empty loader
    probs: np.ndarray  # sigmoid probabilities, float64, in the loader's order
    labels: np.ndarray  # int
    n: int
    seconds: float


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """The fit's record of one epoch (1-based); the validation figures are NaN without a validation loader."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_auc: float
    val_recall: float
    val_accuracy: float
    lr: float  # the learning rate the epoch trained with
    seconds: float  # train + validation

    def to_dict(self) -> dict[str, float]:
        """The flat record, keys in field order (fold-k.json's history, the fold run's epoch metrics)."""
        return asdict(self)
