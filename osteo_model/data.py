"""Datasets and loaders for the exported 8-bit grayscale PNGs.

Input representation (a decision, used everywhere incl. :mod:`osteo_model.predict`):

- images are read with PIL and converted explicitly to 8-bit grayscale (``convert('L')``),
  resized to ``image_size`` x ``image_size`` (bilinear), scaled to [0, 1] and normalised with
  the fixed :data:`MEAN` / :data:`STD` (the ImageNet channel means/stds averaged over RGB);
- networks take ONE input channel: conv1 is built with ``in_channels=1`` and, when ImageNet
  weights are loaded, its RGB kernels are summed over the channel axis
  (:func:`osteo_model.models.adapt_first_conv`). A gray image replicated to RGB and
  normalised per channel gives nearly the same first-layer response as the gray image through
  the summed kernel, at a third of conv1's input cost and with no fake channels.

Speed on small CPUs: decoded images are cached in memory (uint8) when they fit
(``cache='auto'``: below 1 GiB), so an epoch costs no PNG decoding; with ``num_workers=0``
(the default, right for 2 cores) the loader adds next to nothing to the model's own time.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

MEAN = 0.449  # mean of ImageNet's (0.485, 0.456, 0.406)
STD = 0.226  # mean of ImageNet's (0.229, 0.224, 0.225)
CACHE_LIMIT_BYTES = 1 << 30
IMBALANCE_MODES = ("none", "pos_weight", "sampler", "undersample")


# ---------------------------------------------------------------- preprocessing (eval path)
def to_pil_gray(image) -> Image.Image:
    """PNG/JPEG bytes, a path, a PIL image or a numpy array -> 8-bit grayscale PIL image.

    Arrays: uint8 is taken as 0..255; float arrays as 0..1 when their max is <= 1, else as
    0..255 (then clipped and rounded to uint8, the PNG's own representation); HxWx3/4 arrays
    are converted with PIL's luma formula.
    """
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, (bytes, bytearray, memoryview)):
        img = Image.open(io.BytesIO(bytes(image)))
    elif isinstance(image, (str, os.PathLike)):
        with Image.open(image) as f:
            f.load()
            img = f.copy() if f.mode == "L" else f.convert("L")
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            if arr.size and np.nanmax(arr) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3):
            raise ValueError(f"expected an HxW or HxWxC image, got shape {arr.shape}")
        img = Image.fromarray(arr)
    if img.mode != "L":
        img = img.convert("L")
    return img


def resize_uint8(img: Image.Image, image_size: int) -> np.ndarray:
    """Grayscale PIL image -> HxW uint8 array at image_size x image_size (bilinear)."""
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a writable copy


def normalize_uint8(arr: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 HxW (or NxHxW) -> float tensor with a channel axis, (x/255 - MEAN) / STD."""
    t = torch.as_tensor(np.ascontiguousarray(arr)) if isinstance(arr, np.ndarray) else arr
    t = t.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)
    return t.unsqueeze(-3)


def preprocess(image, image_size: int) -> torch.Tensor:
    """The eval path: any accepted image -> normalised 1 x H x W float tensor."""
    return normalize_uint8(resize_uint8(to_pil_gray(image), image_size))


def denormalize(x: torch.Tensor) -> np.ndarray:
    """Inverse of the normalisation, for display: (…,1,H,W) tensor -> uint8 array (…,H,W)."""
    arr = (x.detach().float().cpu() * STD + MEAN).clamp(0, 1).mul(255).round()
    return arr.squeeze(-3).to(torch.uint8).numpy()


# ---------------------------------------------------------------- dataset
class PngDataset(Dataset):
    """(image, label) pairs from PNG paths.

    Returns ``(x, y)``: x a float32 tensor 1 x image_size x image_size, normalised as
    :func:`preprocess`; y a float32 scalar tensor (1 = osteoporosis).

    ``augment=True`` applies :class:`osteo_model.augment.SeededAugment` (rotation +
    brightness) on the full-resolution image before resizing; its randomness comes from
    torch's RNG (seeded by :func:`osteo_model.train.seed_everything` / the loader).
    ``cache``: True, False or 'auto' (cache when the decoded images fit in 1 GiB).
    ``seed`` is kept for API symmetry and reproducibility records.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[int | float],
        *,
        image_size: int,
        augment: bool = False,
        seed: int = 0,
        cache: bool | str = "auto",
    ):
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.float32)
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self._augmenter = None
        if self.augment:
            from osteo_model.augment import SeededAugment

            self._augmenter = SeededAugment()
        if cache == "auto":
            side = 256 if self.augment else self.image_size
            cache = len(self.paths) * side * side <= CACHE_LIMIT_BYTES
        self._arrays: np.ndarray | None = None  # the cache without augmentation: resized uint8, one row an image
        self._images: list[Image.Image] | None = None  # with augmentation: full resolution, resized after it
        if cache:
            self._fill_cache()

    def _load(self, i: int) -> np.ndarray:
        return resize_uint8(to_pil_gray(self.paths[i]), self.image_size)

    def _fill_cache(self) -> None:
        if self.augment:
            self._images = [to_pil_gray(p) for p in self.paths]
        else:
            items = [self._load(i) for i in range(len(self.paths))]
            shape = (len(items), self.image_size, self.image_size)
            self._arrays = np.stack(items) if items else np.zeros(shape, np.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        if self._augmenter is not None:  # full resolution: augmentation before resize
            img = self._images[i] if self._images is not None else to_pil_gray(self.paths[i])
            item = resize_uint8(self._augmenter(img), self.image_size)
        else:
            item = self._arrays[i] if self._arrays is not None else self._load(i)
        return normalize_uint8(item), torch.tensor(self.labels[i])

    @classmethod
    def from_frame(cls, df, *, image_size: int, augment: bool = False, seed: int = 0, **kw):
        """Build from a manifest frame with ``path`` and ``label`` columns."""
        return cls(
            df["path"].tolist(), df["label"].astype(int).tolist(),
            image_size=image_size, augment=augment, seed=seed, **kw,
        )


# ---------------------------------------------------------------- samplers / loaders
class UndersampleSampler(Sampler[int]):
    """Each epoch: every minority-class index plus an equally large random subset of the
    majority class, shuffled. Length = 2 x minority count."""

    def __init__(self, labels: Sequence[float], generator: torch.Generator | None = None):
        y = np.asarray(labels).astype(int)
        self.pos = torch.as_tensor(np.flatnonzero(y == 1))
        self.neg = torch.as_tensor(np.flatnonzero(y == 0))
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError("undersampling needs both classes")
        self.generator = generator
        self.n = int(min(len(self.pos), len(self.neg)))

    def __len__(self) -> int:
        return 2 * self.n

    def __iter__(self) -> Iterator[int]:
        g = self.generator
        pos = self.pos[torch.randperm(len(self.pos), generator=g)[: self.n]]
        neg = self.neg[torch.randperm(len(self.neg), generator=g)[: self.n]]
        idx = torch.cat([pos, neg])
        idx = idx[torch.randperm(len(idx), generator=g)]
        return iter(idx.tolist())


def class_balanced_weights(labels: Sequence[float]) -> torch.Tensor:
    """Per-sample weights 1 / count(class) (for WeightedRandomSampler)."""
    y = np.asarray(labels).astype(int)
    counts = np.bincount(y, minlength=2).astype(np.float64)
    counts[counts == 0] = 1.0
    return torch.as_tensor(1.0 / counts[y], dtype=torch.double)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seed numpy/random from the worker's torch seed (set by the loader)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    num_workers: int = 0,
    imbalance: str = "none",
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A seeded DataLoader.

    ``train=True`` shuffles with a ``torch.Generator`` seeded by ``seed``; ``imbalance``
    ('none' | 'pos_weight' | 'sampler' | 'undersample') picks the sampler: 'sampler' =
    WeightedRandomSampler with class-balanced weights (with replacement, len(dataset) draws),
    'undersample' = :class:`UndersampleSampler`; 'pos_weight' is handled by the loss (plain
    shuffling here). ``train=False``: sequential, no sampler.
    """
    if imbalance not in IMBALANCE_MODES:
        raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}")
    g = torch.Generator()
    g.manual_seed(int(seed))
    sampler = None
    if train:
        labels = getattr(dataset, "labels", None)
        if imbalance in ("sampler", "undersample") and labels is None:
            raise ValueError(f"imbalance={imbalance!r} needs dataset.labels")
        if imbalance == "sampler" and labels is not None:
            w = class_balanced_weights(labels)
            # torch annotates weights as Sequence[float]; it takes them through torch.as_tensor, a Tensor included
            sampler = WeightedRandomSampler(w, num_samples=len(w), replacement=True, generator=g)  # pyright: ignore[reportArgumentType]
        elif imbalance == "undersample" and labels is not None:
            sampler = UndersampleSampler(labels, generator=g)
        elif isinstance(dataset, Sized):  # every dataset of ours has a length; RandomSampler needs it
            sampler = RandomSampler(dataset, generator=g)
        else:
            raise TypeError(f"a training loader shuffles a dataset with a length, not {type(dataset).__name__}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=g,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def existing(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Paths that do not exist (for an early, readable error before training)."""
    return [str(p) for p in paths if not Path(p).exists()]
