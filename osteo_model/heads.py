"""Optional heads on a trained classifier's frozen features (issue 16): clinical fusion, BMD / T-score
regression, and the 3-class output (normal / osteopenia / osteoporosis).

The CNN is not retrained: :func:`embed` runs the backbone once per image and takes the input of the
final linear layer (resnet18/34 and googlenet: the global-average-pooled features; densenet121: the
pooled features; vgg16: the 4096-d input of classifier[6]) and the image's logit. The heads are small
scikit-learn models on those features, fitted on the training images and scored on the test year.
Everything is seeded and deterministic; nothing here knows the database, MLflow or Prefect.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

LABELS3 = ("normal", "osteopenia", "osteoporosis")


def final_linear(model: nn.Module) -> nn.Linear:
    """The classifier's last linear layer (its input is the embedding, its output the logit)."""
    from torchvision.models import VGG, DenseNet, GoogLeNet, ResNet

    if isinstance(model, (ResNet, GoogLeNet)):
        layer = model.fc
    elif isinstance(model, DenseNet):
        layer = model.classifier
    elif isinstance(model, VGG):
        layer = model.classifier[-1]
    else:
        raise TypeError(f"no embedding defined for {type(model).__name__}")
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{type(model).__name__}: the last layer is {type(layer).__name__}, not Linear")
    return layer


@dataclass(frozen=True)
class Embedding:
    features: np.ndarray  # n x d, float32: the input of the final linear layer
    logits: np.ndarray  # n, float32: the classifier's logit (1 = osteoporosis)


def embed_with_logits(model: nn.Module, paths: Sequence[str | os.PathLike], image_size: int,
                      device: torch.device | str | None = None, batch_size: int = 32) -> Embedding:
    """Features and logits of each image, through the eval preprocessing (osteo_model.data.preprocess);
    ``device`` None: CUDA when available."""
    from osteo_model.data import preprocess

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval()
    layer = final_linear(model)
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float().cpu()))
    feats, logits = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(paths), batch_size):
                x = torch.stack([preprocess(p, image_size) for p in paths[start:start + batch_size]]).to(device)
                seen.clear()
                out = model(x)
                feats.append(seen[-1].reshape(len(x), -1))
                logits.append(out.detach().float().cpu().reshape(-1))
    finally:
        hook.remove()
    d = layer.in_features
    return Embedding(
        features=torch.cat(feats).numpy() if feats else np.zeros((0, d), np.float32),
        logits=torch.cat(logits).numpy() if logits else np.zeros(0, np.float32),
    )


def embed(model: nn.Module, paths: Sequence[str | os.PathLike], image_size: int,
          device: torch.device | str | None = None, batch_size: int = 32) -> np.ndarray:
    """The n x d embedding (input of the final linear layer) of each image."""
    return embed_with_logits(model, paths, image_size, device, batch_size).features


# ---------------------------------------------------------------- clinical fusion
@dataclass(frozen=True)
class FusionResult:
    auc_image: float  # logistic regression on the image features alone
    auc_fused: float  # the same plus the clinical variables, same images
    auc_clinical: float  # the clinical variables alone
    clinical: tuple[str, ...]
    n_fit: int
    n_test: int
    prob_image: np.ndarray = field(repr=False)
    prob_fused: np.ndarray = field(repr=False)


def _auc(y, p) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _logistic(c: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _fill(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Missing clinical values (NaN) -> the training column's median (0 when the column is all missing)."""
    med = np.nanmedian(np.where(np.isnan(train).all(axis=0), 0.0, train), axis=0) if train.size else 0.0
    med = np.nan_to_num(med)
    return np.where(np.isnan(train), med, train), np.where(np.isnan(test), med, test)


def image_features(fit_emb: Embedding, test_emb: Embedding, n_components: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The image side of the fusion: the logit, plus ``n_components`` PCA components of the embedding
    (PCA fitted on the training images only)."""
    fit_x, test_x = fit_emb.logits[:, None], test_emb.logits[:, None]
    if n_components > 0:
        from sklearn.decomposition import PCA

        k = min(n_components, fit_emb.features.shape[0], fit_emb.features.shape[1])
        pca = PCA(n_components=k, random_state=seed).fit(fit_emb.features)
        fit_x = np.hstack([fit_x, pca.transform(fit_emb.features)])
        test_x = np.hstack([test_x, pca.transform(test_emb.features)])
    return fit_x.astype(np.float64), test_x.astype(np.float64)


def fusion_auc(fit_image: np.ndarray, fit_clinical: np.ndarray, fit_labels: npt.ArrayLike,
               test_image: np.ndarray, test_clinical: np.ndarray, test_labels: npt.ArrayLike,
               clinical: Sequence[str] = ("age", "sex"), c: float = 1.0) -> FusionResult:
    """Test-year AUC of a standardised logistic regression on [image features] vs [image features +
    clinical variables], both fitted on the same training images (columns of ``*_clinical`` are
    ``clinical``, NaN where unknown)."""
    fit_y, test_y = np.asarray(fit_labels, int), np.asarray(test_labels, int)
    fit_c, test_c = _fill(np.asarray(fit_clinical, float).reshape(len(fit_y), -1),
                          np.asarray(test_clinical, float).reshape(len(test_y), -1))
    fit_i, test_i = np.asarray(fit_image, float).reshape(len(fit_y), -1), np.asarray(test_image, float)
    test_i = test_i.reshape(len(test_y), -1)
    img = _logistic(c).fit(fit_i, fit_y)
    fused = _logistic(c).fit(np.hstack([fit_i, fit_c]), fit_y)
    clin = _logistic(c).fit(fit_c, fit_y)
    p_img = img.predict_proba(test_i)[:, 1]
    p_fused = fused.predict_proba(np.hstack([test_i, test_c]))[:, 1]
    return FusionResult(auc_image=_auc(test_y, p_img), auc_fused=_auc(test_y, p_fused),
                        auc_clinical=_auc(test_y, clin.predict_proba(test_c)[:, 1]), clinical=tuple(clinical),
                        n_fit=len(fit_y), n_test=len(test_y), prob_image=p_img, prob_fused=p_fused)


# ---------------------------------------------------------------- BMD / T-score regression
@dataclass(frozen=True)
class RegressionResult:
    pearson_r: float
    mae: float
    n_fit: int
    n_test: int
    alpha: float  # the ridge penalty chosen on the training images
    predictions: np.ndarray = field(repr=False)  # one per test row (NaN where the target was missing)


ALPHAS = tuple(10.0 ** k for k in range(-2, 5))


def bmd_head(fit_x: np.ndarray, fit_target: npt.ArrayLike, test_x: np.ndarray, test_target: npt.ArrayLike,
             alphas: Sequence[float] = ALPHAS) -> RegressionResult:
    """Ridge regression (standardised features, penalty by leave-one-out CV on the training images) from
    the embedding to a continuous target (neck BMD or T-score); Pearson r and MAE on the test rows.
    Rows whose target is NaN are left out of the fit and of the scores."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit_x, test_x = np.asarray(fit_x, float), np.asarray(test_x, float)
    fit_y, test_y = np.asarray(fit_target, float), np.asarray(test_target, float)
    keep = ~np.isnan(fit_y)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas))).fit(fit_x[keep], fit_y[keep])
    pred = model.predict(test_x) if len(test_x) else np.zeros(0)
    known = ~np.isnan(test_y)
    r, mae = float("nan"), float("nan")
    if known.sum() >= 2 and np.std(pred[known]) > 0 and np.std(test_y[known]) > 0:
        r = float(np.corrcoef(pred[known], test_y[known])[0, 1])
    if known.any():
        mae = float(np.mean(np.abs(pred[known] - test_y[known])))
    return RegressionResult(pearson_r=r, mae=mae, n_fit=int(keep.sum()), n_test=int(known.sum()),
                            alpha=float(model.steps[-1][1].alpha_), predictions=np.where(known, pred, np.nan))


# ---------------------------------------------------------------- 3 classes
@dataclass(frozen=True)
class ThreeClassResult:
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # rows truth, columns predicted, in LABELS3 order
    n_fit: int
    n_test: int
    predictions: list[str] = field(repr=False)


def three_class_head(fit_x: np.ndarray, fit_labels: Iterable[str], test_x: np.ndarray,
                     test_labels: Iterable[str], c: float = 0.1) -> ThreeClassResult:
    """Multinomial logistic regression (standardised features) from the embedding to normal /
    osteopenia / osteoporosis; accuracy, macro F1 (over the three classes) and the 3x3 confusion matrix
    on the test rows."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    fit_l, test_l = [str(x) for x in fit_labels], [str(x) for x in test_labels]
    unknown = sorted({x for x in fit_l + test_l} - set(LABELS3))
    if unknown:
        raise ValueError(f"unknown 3-class labels {unknown}; expected {LABELS3}")
    model = _logistic(c).fit(np.asarray(fit_x, float), fit_l)
    pred = [str(p) for p in model.predict(np.asarray(test_x, float))] if len(test_l) else []
    cm = confusion_matrix(test_l, pred, labels=list(LABELS3)) if pred else np.zeros((3, 3), int)
    return ThreeClassResult(
        accuracy=float(accuracy_score(test_l, pred)) if pred else float("nan"),
        macro_f1=float(f1_score(test_l, pred, labels=list(LABELS3), average="macro",
                                  zero_division=0))  # pyright: ignore[reportArgumentType] - unannotated, default 'warn'
        if pred else float("nan"),
        confusion=[[int(v) for v in row] for row in cm], n_fit=len(fit_l), n_test=len(test_l),
        predictions=pred)
