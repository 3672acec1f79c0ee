"""What the rest of genlab knows about data: ``DataSpec`` (what a model needs when it is built), the ``Dataset``
protocol (what the trainer, the metrics and the figures call), ``DataConfig`` (the options a dataset loader reads)
and ``DatasetEntry`` (a row of the ``DATASETS`` registry). Imports nothing of genlab's data modules, so the image
and text datasets can both depend on it without depending on each other."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

# --- checking a saved spec ---

MAX_SIDE = 65536  # a side of an image, or a text length
MAX_EXAMPLE_SIZE = 2**26  # values in one example
MAX_CLASSES = MAX_VOCAB = 10**6
MAX_PALETTE = 4096


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"data_spec.{key}={value!r} is not an integer in [{lo}, {hi}]")
    return value


def _int_list(value: Any, key: str, lo: int, hi: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) > 8:
        raise ValueError(f"data_spec.{key} is not a short list of integers")
    return [_int(v, key, lo, hi) for v in value]


def _str_list(value: Any, key: str, most: int) -> list[str]:
    if not isinstance(value, (list, tuple)) or len(value) > most or not all(isinstance(v, str) for v in value):
        raise ValueError(f"data_spec.{key} is not a list of at most {most:,} strings")
    return value


def _colours(value: Any, channels: int) -> list[tuple[float, ...]]:
    """A palette: at most ``MAX_PALETTE`` colours of ``channels`` numbers in [0, 1] each."""
    def colour(c: Any) -> bool:
        return isinstance(c, (list, tuple)) and len(c) == channels and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in c)

    if not isinstance(value, (list, tuple)) or len(value) > MAX_PALETTE or not all(map(colour, value)):
        raise ValueError(f"data_spec.palette is not a list of at most {MAX_PALETTE} colours of {channels} values "
                         "in [0, 1]")
    return [tuple(float(v) for v in c) for c in value]


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data when it is built."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) for images; (L,) characters per sample for text
    num_classes: int = 0  # 0: unlabelled
    binary: bool = False  # values are exactly 0 or 1 (Bernoulli likelihoods are exact)
    class_names: tuple[str, ...] = ()
    levels: int = 256  # number of grey levels of the source data (8-bit: 256); for discretized likelihoods
    vocab: tuple[str, ...] = ()  # text: the token of each id (specials first, see genlab.data.vocab); () for images
    # palette-quantized images: the K colours (each C values in [0, 1]) every pixel is one of; () otherwise
    palette: tuple[tuple[float, ...], ...] = ()

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def variables(self) -> int:
        """The variables a likelihood is over, the "dimensions" of bits per dimension: one palette index per pixel
        for palette-quantized images (H * W), otherwise every number of an example (``dim``)."""
        return math.prod(self.shape[1:]) if self.palette else self.dim

    @property
    def is_text(self) -> bool:
        """Token ids of a vocabulary rather than images."""
        return bool(self.vocab)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> DataSpec:
        """The spec a run folder saved, every field checked for type and range (the file may be hostile): a
        ``ValueError`` with one line for anything genlab would not have written."""
        if not isinstance(d, dict):
            raise ValueError(f"data_spec is a JSON {type(d).__name__}, not an object")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown or "name" not in d or "shape" not in d:
            raise ValueError(f"data_spec has unknown keys {unknown}" if unknown else "data_spec lacks name or shape")
        shape = tuple(_int_list(d["shape"], "shape", 1, MAX_SIDE))
        if not 1 <= len(shape) <= 3 or math.prod(shape) > MAX_EXAMPLE_SIZE:
            raise ValueError(f"data_spec.shape {list(shape)} is not an image (C, H, W) or a text length (L,) "
                             f"of at most {MAX_EXAMPLE_SIZE:,} values")
        num_classes = _int(d.get("num_classes", 0), "num_classes", 0, MAX_CLASSES)
        class_names = tuple(_str_list(d.get("class_names", []), "class_names", MAX_CLASSES))
        if class_names and len(class_names) != num_classes:
            raise ValueError(f"data_spec names {len(class_names)} classes but has num_classes={num_classes}")
        binary = d.get("binary", False)
        if not isinstance(binary, bool):
            raise ValueError(f"data_spec.binary={binary!r} is not true or false")
        name = d["name"]
        if not isinstance(name, str):
            raise ValueError(f"data_spec.name={name!r} is not a string")
        return cls(name=name, shape=shape, num_classes=num_classes, binary=binary, class_names=class_names,
                   levels=_int(d.get("levels", 256), "levels", 2, 2**16),
                   vocab=tuple(_str_list(d.get("vocab", []), "vocab", MAX_VOCAB)),
                   palette=tuple(_colours(d.get("palette", []), shape[0])))


@runtime_checkable
class Dataset(Protocol):
    """A train and a test split held in memory. Batches are dicts: ``{"x": (B, C, H, W)[, "y": (B,)]}`` for
    images, ``{"tokens": (B, L)}`` for text (see DESIGN.md)."""

    spec: DataSpec

    def __len__(self) -> int:
        """Examples in the training split."""
        ...

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole of ``split`` ("train" or "test") as the model sees it, and its labels or None."""
        ...

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``split``, shuffled with ``generator`` when asked, the first ``limit`` examples only."""
        ...

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        ...


# --- batches ---

def batch_length(batch: dict[str, torch.Tensor]) -> int:
    """Examples in a batch: the length of its first tensor (``"x"`` for images, ``"tokens"`` for text)."""
    return len(next(iter(batch.values())))


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device,
                    channels_last: bool = False) -> dict[str, torch.Tensor]:
    """The batch on ``device``; with ``channels_last``, its 4-D tensors (images) stored NHWC (same values)."""
    if device.type != "cpu":
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in batch.items()}
    return batch


def pick_test_examples(data: Dataset, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` test examples (and their labels, or None): a fixed spread picked with ``seed``, not one class."""
    x, y = data.split("test")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count]
    return x[pick], None if y is None else y[pick]


@dataclass
class DataConfig:
    name: str = "mnist-5k"  # a named dataset (`genlab list`) or folder:PATH
    data_dir: str | None = None  # explicit folder holding the files; searched first
    binarize: str = "none"  # none | static | dynamic | threshold (for Bernoulli likelihoods)
    image_size: int | None = None  # folder datasets: resize to this square size (pixels)
    channels: int | None = None  # folder datasets: 1 (grey) or 3 (RGB); None keeps what the files have
    # K > 0: quantize the images to K colours found by k-means over the training split, for models with a palette
    # output (each pixel one of K colours instead of C grey levels); 0 keeps the images as they are
    palette: int = 0
    # pokemon: keep only the centre N x N pixels after resizing to image_size (the lecture cut 40x40 to 20x20);
    # 0 keeps the whole image
    center_crop: int = 0
    # mirror each training image left-right with probability 1/2 every time it is drawn: twice the images for small
    # sets whose mirror images are as real as they are (sprites, clothes); not for digits or text
    flip: bool = False
    download: bool = True  # allow a checksummed download when the files are not found locally
    # text datasets (poems, poems:PATH; see genlab.data.text)
    forms: tuple[str, ...] = ("couplet5",)  # couplet5 | couplet7 | quatrain5 | quatrain7 (several: padded)
    min_count: int = 1  # characters seen fewer times in the training split become UNK
    simplified: bool = False  # convert Traditional to Simplified characters first (needs the opencc package)


# the fields of DataConfig that only image datasets read, and those only text datasets read
IMAGE_OPTIONS = ("binarize", "image_size", "channels", "palette", "center_crop", "flip", "download")
TEXT_OPTIONS = ("forms", "min_count", "simplified")


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset in the ``DATASETS`` registry: ``load(cfg, argument, progress)`` builds it from a
    ``DataConfig``; ``argument`` is the part after the colon of names like ``folder:PATH``."""

    name: str
    summary: str  # one line for `genlab list`
    load: Callable[[DataConfig, str | None, bool], Dataset]
    kind: str = "image"  # image | text: which DataConfig fields apply (IMAGE_OPTIONS, TEXT_OPTIONS)
    argument: str | None = None  # "PATH" for names written folder:PATH; None when the name takes none
    argument_required: bool = True  # False: both `poems` and `poems:PATH` are valid
    argument_summary: str = ""  # `genlab list`'s line for the NAME:ARG form when the bare name is valid too

    def listed(self) -> dict[str, str]:
        """How ``genlab list`` shows the entry: name (or name:ARG) -> summary."""
        if self.argument is None:
            return {self.name: self.summary}
        with_arg = {f"{self.name}:{self.argument}": self.argument_summary or self.summary}
        return with_arg if self.argument_required else {self.name: self.summary, **with_arg}
