"""The classifier exported to ONNX, and predictions + Grad-CAM through ONNX Runtime.

For the archs whose head is global average pooling then one linear logit (:data:`ONNX_ARCHS`),
dlogit/dA = fc.weight / (h*w) at every position, so Grad-CAM's channel weights are a fixed
positive scale of fc.weight. The heat map then needs only the last block's activations A and
fc.weight: no backward pass, so the whole forward can run in ONNX Runtime (about twice as fast
as eager PyTorch on a small CPU). The exported graph's outputs are "logit" (N x 1) and
"activations" (A, N x C x h x w), plus "heatmap" (N x H x W): :func:`cam_from_activations` and the
"heatmap" output both come from :func:`osteo_model.gradcam.cam_from_weights`, the very code of
:func:`osteo_model.gradcam.gradcam` (traced into the graph for the latter).

Why the heat map is in the graph and preprocessing avoids torch ops: on a 2-core machine any
parallel torch op (an elementwise op or F.interpolate on 224 x 224 values) leaves torch's
OpenMP threads spinning, and they slow the next ONNX Runtime run by ~40% (resnet18 at 224 px:
~8 ms for logit + heat map this way, ~12 ms with the map upsampled by torch, ~17 ms eager).

onnxruntime is imported only inside functions: importing this module never needs it.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from osteo_common.files import atomic_write_bytes
from osteo_model.data import normalize_uint8, resize_uint8, to_pil_gray
from osteo_model.gradcam import _arch_of, _EvalMode, cam_from_weights, split_model
from osteo_model.heads import final_linear

# avgpool -> (flatten, dropout) -> fc; densenet (ReLU before its pool) and vgg (max-pool and an
# MLP head) need a real backward pass for Grad-CAM, so they stay on PyTorch
ONNX_ARCHS = ("resnet18", "resnet34", "googlenet")
INPUT, LOGIT, ACTIVATIONS, HEATMAP = "image", "logit", "activations", "heatmap"
OPSET = 17


def supports_onnx(arch: str) -> bool:
    return arch in ONNX_ARCHS


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _WithActivations(nn.Module):
    """model(x) as (logit, A, Grad-CAM map): the backbone up to A, the head (gradcam.split_model),
    and the map from A with the weights the average pool's backward would give."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        features, head = split_model(self.model)
        a = features(x)
        return head(a), a, cam_from_weights(a, _channel_weights(final_linear(self.model).weight, a), x.shape[-2:])


def _channel_weights(fc_weight: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """dlogit/dA averaged over space, for avgpool -> linear: fc.weight / (h*w) (1 x C x 1 x 1)."""
    return fc_weight.reshape(1, -1, 1, 1) / (a.shape[-2] * a.shape[-1])


def _in_channels(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def export_onnx(model: nn.Module, image_size: int, path: str | os.PathLike) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically): input "image" N x C x H x W float32
    (H = W = image_size), outputs "logit" N x 1, "activations" N x C x h x w and "heatmap"
    N x H x W, batch size dynamic. Raises ValueError for an arch without an avgpool -> linear head."""
    try:
        kind = _arch_of(model)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc
    if kind not in ("resnet", "googlenet"):
        raise ValueError(f"ONNX export needs an avgpool -> linear head ({', '.join(ONNX_ARCHS)}); "
                         f"{type(model).__name__} has none")
    device = next(model.parameters()).device
    dummy = torch.zeros(1, _in_channels(model), int(image_size), int(image_size), device=device)
    buf = io.BytesIO()
    # eval mode on the wrapper: otherwise BatchNorm is exported in training mode (batch statistics)
    with _EvalMode(model), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter on purpose: the dynamo one needs onnxscript
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export")
        # f is annotated str | PathLike, but the TorchScript exporter writes to a file-like object too
        # (torch.serialization._open_file_like in its onnx_proto_utils)
        torch.onnx.export(
            _WithActivations(model).eval(), (dummy,), buf,  # pyright: ignore[reportArgumentType]
            dynamo=False, opset_version=OPSET,
            input_names=[INPUT], output_names=[LOGIT, ACTIVATIONS, HEATMAP],
            dynamic_axes={name: {0: "batch"} for name in (INPUT, LOGIT, ACTIVATIONS, HEATMAP)},
        )
    path = Path(path)
    atomic_write_bytes(path, buf.getbuffer())  # a reader never sees half a model
    return path


def head_weight(model: nn.Module) -> np.ndarray:
    """fc.weight as a float32 vector (C,)."""
    return final_linear(model).weight.detach().float().cpu().numpy().reshape(-1)


def cam_from_activations(a: np.ndarray, weight: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM maps (N x H x W float32 in [0, 1]) from A (N x C x h x w) and fc.weight (C,),
    equal to :func:`osteo_model.gradcam.gradcam`'s for an avgpool -> linear head."""
    at = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    weights = _channel_weights(torch.from_numpy(np.asarray(weight, dtype=np.float32)), at)
    with torch.no_grad():
        return cam_from_weights(at, weights, tuple(size)).numpy().astype(np.float32, copy=False)


@functools.cache
def _levels() -> np.ndarray:
    """data.normalize_uint8 of every uint8 level: indexing it gives data.preprocess's values bit
    for bit without a torch op per image (see the module docstring)."""
    return normalize_uint8(np.arange(256, dtype=np.uint8)[None]).numpy().reshape(256)


def preprocess_numpy(image, image_size: int) -> np.ndarray:
    """:func:`osteo_model.data.preprocess` as a 1 x H x W float32 array (the same values)."""
    return _levels()[resize_uint8(to_pil_gray(image), image_size)][None]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


class OnnxClassifier:
    """:class:`osteo_model.predict.Predictor`'s interface, run by ONNX Runtime on the CPU.

    ``images`` as for Predictor (arrays, PNG/JPEG bytes, paths, PIL images; one image or a
    sequence); ``predict`` returns the same dicts (probability, label, heatmap float32
    image_size x image_size in [0, 1] or None). ``preprocess`` returns a numpy array. A graph
    without the "heatmap" output gets its maps from "activations" (:func:`cam_from_activations`).
    """

    def __init__(self, model: str | os.PathLike | bytes, weight, image_size: int, threshold: float = 0.5,
                 *, threads: int | None = None, batch_size: int = 16, spin: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads) if threads else torch.get_num_threads()
        # spin=False: idle pool threads sleep instead of spinning, so that work beside the runs (the screening's
        # reader thread) gets the cores between and inside them; a single request's latency keeps the spin
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(model))
        self.session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        self.weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.in_graph_heatmap = HEATMAP in outputs
        channels = outputs[ACTIVATIONS].shape[1]
        if isinstance(channels, int) and channels != self.weight.size:
            raise ValueError(f"head weight has {self.weight.size} channels, the ONNX activations {channels}")
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)

    def preprocess(self, images) -> np.ndarray:
        return np.stack([preprocess_numpy(im, self.image_size) for im in images])

    def _run(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs by name (ONNX Runtime types them as any value; ours are all dense tensors)."""
        out = self.session.run(names, {INPUT: x})
        arrays = [o for o in out if isinstance(o, np.ndarray)]
        if len(arrays) != len(names):
            raise TypeError(f"the ONNX graph's outputs {names} are not all dense tensors")
        return arrays

    def probabilities(self, x: np.ndarray) -> list[float]:
        """The probability of each image of a batch already preprocessed (N x 1 x H x W, :meth:`preprocess`'s)."""
        (logit,) = self._run([LOGIT], x)
        return _sigmoid(logit.reshape(-1)).tolist()

    def predict(self, images, *, heatmaps: bool = True) -> list[dict]:
        from osteo_model.predict import _is_single

        if _is_single(images):
            images = [images]
        out: list[dict] = []
        for start in range(0, len(images), self.batch_size):
            x = self.preprocess(images[start : start + self.batch_size])
            heat: np.ndarray | list[None]
            if heatmaps and self.in_graph_heatmap:
                logit, heat = self._run([LOGIT, HEATMAP], x)
            elif heatmaps:
                logit, a = self._run([LOGIT, ACTIVATIONS], x)
                heat = cam_from_activations(a, self.weight, x.shape[-2:])
            else:
                (logit,) = self._run([LOGIT], x)
                heat = [None] * len(x)
            for p, h in zip(_sigmoid(logit.reshape(-1)).tolist(), heat):
                out.append({"probability": float(p), "label": int(p >= self.threshold), "heatmap": h})
        return out

    @classmethod
    def load(cls, onnx_path, checkpoint_path, *, threshold: float | None = None,
             threads: int | None = None, spin: bool = True) -> OnnxClassifier:
        """The exported graph plus, from the checkpoint (:func:`osteo_model.predict.save_checkpoint`'s
        format, read with weights_only), fc.weight, image_size and the threshold (extra's, else the
        config's, as :meth:`Predictor.from_checkpoint`)."""
        from osteo_model.config import TrainConfig
        from osteo_model.predict import CHECKPOINT_FORMAT

        payload = torch.load(Path(checkpoint_path), map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{checkpoint_path}: not an osteo checkpoint")
        if not supports_onnx(payload["arch"]):
            raise ValueError(f"{checkpoint_path}: {payload['arch']} is not served through ONNX")
        config = TrainConfig.from_dict(payload["config"])
        extra = dict(payload.get("extra") or {})
        if threshold is None:
            threshold = float(extra.get("threshold", config.threshold))
        weight = payload["state_dict"]["fc.weight"].float().numpy()
        return cls(onnx_path, weight, config.image_size, threshold=threshold, threads=threads, spin=spin)


def build_classifier(checkpoint: Path, onnx: Path | None, threshold: float | None, *,
                     threads: int | None = None, spin: bool = True):
    """(classifier, runtime): ONNX Runtime when the version has an ONNX export and the runtime is installed,
    else PyTorch. The threshold stored with the version wins over the checkpoint's. The service and
    `osteo screen` load every registered classifier through this."""
    from osteo_model.predict import Predictor

    if onnx is not None and onnxruntime_available():
        return OnnxClassifier.load(onnx, checkpoint, threshold=threshold, threads=threads,
                                   spin=spin), "onnxruntime"
    return Predictor.from_checkpoint(checkpoint, threshold=threshold, device="cpu"), "pytorch"
