"""Poem and line corpora for text models: chinese-poetry JSON and plain text -> fixed-length character samples,
a character vocabulary, and token batches held in memory.

A sample is stored without punctuation: the couplet ``白日依山盡，黃河入海流。`` is the 10 characters
``白日依山盡黃河入海流``; ``format_poem`` puts the punctuation back from the length. The forms:

- ``couplet5`` / ``couplet7``: two lines of five / seven characters (10 / 14 characters);
- ``quatrain5`` / ``quatrain7``: a whole poem of exactly four such lines (20 / 28 characters).

Sources: a chinese-poetry JSON file (a list of objects whose ``paragraphs`` is a list of lines), a plain-text
file (one sample per line, with or without punctuation), or a folder of such files (``*.json``, ``*.txt``, searched
recursively). The named corpus ``poems`` is the Complete Tang Poems (the ``quantangshi/`` folder of the
chinese-poetry repository), found like every named dataset: ``--data-dir``, ``$GENLAB_DATA/chinese-poetry/``, the
user cache, the system data folders. Candidates that do not fit are skipped and counted by reason
(``TextDataset.stats``); a file that cannot be read at all is an error naming the file.
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from genlab.data.sources import search_dirs
from genlab.data.spec import DataConfig, DatasetEntry, DataSpec
from genlab.data.vocab import BOS, PAD, UNK, UNK_CHAR, Vocabulary
from genlab.errors import DatasetError
from genlab.files import parse_json
from genlab.limits import check_data_size
from genlab.registry import DATASETS

__all__ = ["FORMS", "PAD", "UNK", "BOS", "UNK_CHAR", "Vocabulary", "TextDataset", "extract_samples",
           "format_poem", "parse_line", "load_corpus", "load_text_dataset", "find_poems", "POEMS_FOLDER"]

# form -> (characters per line, lines)
FORMS: dict[str, tuple[int, int]] = {"couplet5": (5, 2), "couplet7": (7, 2), "quatrain5": (5, 4),
                                     "quatrain7": (7, 4)}
POEMS_FOLDER = "chinese-poetry"  # the folder name searched for the named corpus ``poems``
TEXT_SUFFIXES = (".json", ".txt")
SKIP_REASONS = ("empty", "no_paragraphs", "odd_lines", "non_cjk", "wrong_length", "duplicates")

_CJK = re.compile("^[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+$")
_CLAUSE_BREAK = re.compile(r"[，。！？；：、,.!?;:\s]+")
_SPLIT_SEED = 20240607  # the fixed shuffle that picks the held-out test split


def _length_to_form() -> dict[int, tuple[int, int]]:
    return {n * lines: (n, lines) for n, lines in FORMS.values()}


def format_poem(text: str) -> str:
    """``白日依山盡黃河入海流`` -> ``白日依山盡，黃河入海流。``: commas after odd lines, full stops after even ones.
    A text whose length is no form's is returned unchanged."""
    shape = _length_to_form().get(len(text))
    if shape is None:
        return text
    n, lines = shape
    parts = [text[i * n:(i + 1) * n] + ("，" if i % 2 == 0 else "。") for i in range(lines)]
    return "".join(parts)


def parse_line(text: str, forms: Sequence[str] = tuple(FORMS)) -> str:
    """A line typed by a user (``白日依山盡，黃河入海流。`` or without punctuation) -> the sample's characters.

    Raises DatasetError with what is wrong when the line is not one of ``forms``."""
    sample, reason = _fit([c for c in _CLAUSE_BREAK.split(text.strip()) if c], _form_shapes(forms))
    if sample is None:
        allowed = ", ".join(f"{f} ({FORMS[f][0] * FORMS[f][1]} characters)" for f in forms)
        what = {"empty": "it is empty", "non_cjk": "it holds characters that are not Chinese",
                "wrong_length": "its length does not fit"}[reason]
        raise DatasetError(f"cannot use {text!r}: {what}; give one of {allowed}, e.g. 白日依山盡，黃河入海流")
    return sample


# --- extraction ---

def _form_shapes(forms: Sequence[str]) -> set[tuple[int, int]]:
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise DatasetError(f"unknown text form(s) {unknown or '(none)'}; choose from {', '.join(FORMS)}")
    return {FORMS[f] for f in forms}


def _fit(clauses: list[str], shapes: set[tuple[int, int]]) -> tuple[str | None, str]:
    """Clauses of one candidate -> (sample, "") or (None, reason). Without punctuation (one clause) the length
    alone decides the form."""
    if not clauses:
        return None, "empty"
    if not all(_CJK.match(c) for c in clauses):
        return None, "non_cjk"
    if len(clauses) == 1:
        shape = _length_to_form().get(len(clauses[0]))
        return (clauses[0], "") if shape in shapes else (None, "wrong_length")
    n = len(clauses[0])
    if all(len(c) == n for c in clauses) and (n, len(clauses)) in shapes:
        return "".join(clauses), ""
    return None, "wrong_length"


def _clauses(text: str) -> list[str]:
    return [c for c in _CLAUSE_BREAK.split(text) if c]


def extract_samples(texts: Iterable[Any], forms: Sequence[str], stats: Counter, *, poems: bool) -> Iterator[str]:
    """Samples of ``forms`` from ``texts``.

    With ``poems`` each text is a poem's ``paragraphs`` (a list of lines): couplets are taken pairwise from each
    paragraph, a quatrain is a whole poem of four equal lines. Otherwise each text is one plain-text line, one
    candidate sample. Every rejected candidate is counted in ``stats`` under its reason (see SKIP_REASONS).
    """
    shapes = _form_shapes(forms)
    couplets = {(n, 2) for n, lines in shapes if lines == 2}
    quatrains = {(n, 4) for n, lines in shapes if lines == 4}
    for text in texts:
        if not poems:
            stats["candidates"] += 1
            sample, reason = _fit(_clauses(text), shapes)
            if sample is None:
                stats[reason] += 1
            else:
                yield sample
            continue
        if not isinstance(text, list) or not all(isinstance(p, str) for p in text):
            stats["no_paragraphs"] += 1
            continue
        if quatrains:
            stats["candidates"] += 1
            sample, reason = _fit([c for p in text for c in _clauses(p)], quatrains)
            if sample is None:
                stats[reason] += 1
            else:
                yield sample
        if couplets:
            for paragraph in text:
                clauses = _clauses(paragraph)
                if not clauses:
                    stats["candidates"] += 1
                    stats["empty"] += 1
                    continue
                if len(clauses) % 2:
                    stats["candidates"] += 1
                    stats["odd_lines"] += 1
                    continue
                for i in range(0, len(clauses), 2):
                    stats["candidates"] += 1
                    sample, reason = _fit(clauses[i:i + 2], couplets)
                    if sample is None:
                        stats[reason] += 1
                    else:
                        yield sample


def _read_text(path: Path) -> str:
    """The text of ``path``, refused (one line) when it is over ``max_data_bytes()`` (checked before reading),
    not UTF-8, unreadable, or empty."""
    try:
        check_data_size(str(path), path.stat().st_size)
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8 or remove "
                           "it") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not raw.strip():
        raise DatasetError(f"{path}: the file is empty; fill it or remove it")
    return raw


def _parse_json(raw: str, path: Path) -> Any:
    """Decode JSON text; every way it can fail (syntax, nesting too deep, a number too long) is one line."""
    try:
        return parse_json(raw)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); fix or remove "
                           "the file") from None
    except ValueError as e:  # nested too deeply, a number too long
        raise DatasetError(f"{path}: not usable JSON ({e}); a chinese-poetry file is a flat list of poems: fix or "
                           "remove the file") from None


def _read_file(path: Path, stats: Counter) -> tuple[list[Any], bool]:
    """The candidate texts of one file and whether they are poems (JSON) or lines (plain text)."""
    raw = _read_text(path)
    stats["files"] += 1
    if path.suffix.lower() != ".json":
        lines = raw.splitlines()
        stats["lines"] += len(lines)
        return lines, False
    obj = _parse_json(raw, path)
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list):
        raise DatasetError(f"{path}: expected a JSON list of poems (objects with 'paragraphs'), found a "
                           f"{type(obj).__name__}")
    if not any(isinstance(p, dict) for p in obj):  # single odd entries are counted; a list of none is the wrong file
        found = f"a list of {', '.join(sorted({type(p).__name__ for p in obj}))}" if obj else "an empty list"
        raise DatasetError(f"{path}: expected a JSON list of poems (objects with 'paragraphs'), found {found}; fix "
                           "or remove the file")
    stats["poems"] += len(obj)
    return [p.get("paragraphs") if isinstance(p, dict) else None for p in obj], True


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"poems:{path}: no such file or folder; give a chinese-poetry JSON file, a text file with "
                           "one sample per line, or a folder of them")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise DatasetError(f"poems:{path}: no {' or '.join(TEXT_SUFFIXES)} files in this folder")
    return files


# --- simplified characters ---

def simplified_converter() -> Any:
    """A function str -> str converting Traditional to Simplified characters, from the ``opencc`` package."""
    try:
        import opencc
    except ImportError:
        raise DatasetError("data.simplified=true needs a Traditional-to-Simplified converter: pip install opencc "
                           "(or opencc-python-reimplemented), or leave data.simplified=false") from None
    for config in ("t2s", "t2s.json"):
        try:
            return opencc.OpenCC(config).convert
        except Exception:  # noqa: BLE001 - the packages disagree on config names and raise different errors
            continue
    raise DatasetError("the installed opencc package has no t2s (Traditional to Simplified) conversion; "
                       "reinstall it: pip install --force-reinstall opencc")


# --- the dataset ---

@dataclass
class TextDataset:
    """Train and test samples as (N, L) int64 ids in memory, the vocabulary, every extracted sample as text (for
    novelty), and the extraction counts."""

    spec: DataSpec
    vocab: Vocabulary
    train_tokens: torch.Tensor  # (N, L) int64, PAD-padded
    test_tokens: torch.Tensor  # (M, L)
    corpus: frozenset[str] = field(repr=False)  # every distinct sample of both splits, without punctuation
    stats: dict[str, int] = field(default_factory=dict)
    forms: tuple[str, ...] = ("couplet5",)

    def __len__(self) -> int:
        return len(self.train_tokens)

    def split(self, split: str) -> tuple[torch.Tensor, None]:
        """The ids of ``split`` ("train" or "test") and no labels."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        return (self.train_tokens if split == "train" else self.test_tokens), None

    def texts(self, split: str) -> list[str]:
        """The samples of ``split`` as text (unknown characters as UNK_CHAR)."""
        return [self.vocab.decode(row) for row in self.split(split)[0].tolist()]

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Yield ``{"tokens": (B, L) int64}``."""
        tokens = self.split(split)[0]
        n = len(tokens) if limit is None else min(limit, len(tokens))
        order = torch.randperm(len(tokens), generator=generator)[:n] if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield {"tokens": tokens.index_select(0, order[start:start + batch_size])}

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.split(split)[0])
        return n // batch_size if drop_last else -(-n // batch_size)

    def summary(self) -> str:
        """One line: what was extracted, the split, the vocabulary and what was skipped."""
        s = self.stats
        skipped = ", ".join(f"{s[k]:,} {k.replace('_', ' ')}" for k in SKIP_REASONS if s.get(k))
        unk = s.get("unk_chars", 0)
        return (f"{self.spec.name}: {s.get('kept', 0):,} distinct {'/'.join(self.forms)} samples from "
                f"{s.get('files', 0):,} file(s) (train {len(self.train_tokens):,}, test {len(self.test_tokens):,}); "
                f"vocabulary {len(self.vocab):,} tokens"
                + (f", {unk:,} rarer characters mapped to {UNK_CHAR}" if unk else "")
                + (f"; skipped {skipped}" if skipped else ""))


def find_poems(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the named corpus ``poems`` (the Complete Tang Poems), by the search order of named datasets:
    ``data_dir`` (or its ``chinese-poetry/``), ``$GENLAB_DATA/chinese-poetry/``, the user cache, the system data
    folders. In each, ``quantangshi/`` is used when present, else the folder itself if it holds JSON files."""
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DatasetError(f"--data-dir {data_dir}: no such directory; give the folder holding the chinese-poetry "
                           "JSON files")
    places = search_dirs(POEMS_FOLDER, data_dir)
    for folder in places:
        for candidate in (folder / "quantangshi", folder):
            if candidate.is_dir() and any(candidate.glob("*.json")):
                return candidate
    raise DatasetError("the poems corpus was not found; searched " + ", ".join(str(p) for p in places)
                       + ". Clone https://github.com/chinese-poetry/chinese-poetry into one of them (its "
                         "quantangshi/ folder is used), or give a file or folder as --data poems:PATH")


def load_corpus(root: Path, *, name: str, forms: Sequence[str] = ("couplet5",), min_count: int = 1,
                simplified: bool = False, test_fraction: float = 0.02, progress: bool = True) -> TextDataset:
    """Read the corpus file or folder ``root``, extract the samples of ``forms``, deduplicate, hold out
    ``test_fraction`` of them (at least one) with a fixed shuffle, and build the vocabulary of the training split
    (characters seen fewer than ``min_count`` times become UNK). ``name`` becomes ``spec.name``."""
    from tqdm import tqdm

    forms = tuple(forms)
    _form_shapes(forms)
    if not 0 < test_fraction < 1:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
    convert = simplified_converter() if simplified else None
    stats: Counter = Counter()
    seen: dict[str, None] = {}  # insertion-ordered set
    files = _files(root)
    for path in tqdm(files, desc=f"reading {root.name}", disable=not progress or len(files) < 5, leave=False):
        texts, poems = _read_file(path, stats)
        if convert is not None:
            texts = [[convert(p) if isinstance(p, str) else p for p in t] if isinstance(t, list) else
                     (convert(t) if isinstance(t, str) else t) for t in texts]
        for sample in extract_samples(texts, forms, stats, poems=poems):
            if sample in seen:
                stats["duplicates"] += 1
            else:
                seen[sample] = None
    samples = list(seen)
    stats["kept"] = len(samples)
    if len(samples) < 2:
        raise DatasetError(f"{name}: found {len(samples)} {'/'.join(forms)} sample(s) in {len(files)} file(s); "
                           "at least 2 are needed (is --data.forms right?) - "
                           + ", ".join(f"{k}: {v}" for k, v in sorted(stats.items())))
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(samples))
    n_test = max(1, min(len(samples) - 1, round(len(samples) * test_fraction)))
    test = [samples[i] for i in np.sort(order[:n_test])]
    train = [samples[i] for i in np.sort(order[n_test:])]
    vocab = Vocabulary.build(train, min_count)
    stats["unk_chars"] = len({c for t in train for c in t if c not in vocab.index})
    length = max(n * lines for n, lines in (FORMS[f] for f in forms))
    spec = DataSpec(name=name, shape=(length,), vocab=vocab.tokens)
    return TextDataset(spec, vocab, vocab.encode_batch(train, length), vocab.encode_batch(test, length),
                       frozenset(samples), dict(stats), forms)


def load_text_dataset(name: str = "poems", *, data_dir: str | os.PathLike | None = None,
                      forms: Sequence[str] = ("couplet5",), min_count: int = 1, simplified: bool = False,
                      test_fraction: float = 0.02, progress: bool = True) -> TextDataset:
    """``poems`` (the named Tang corpus, found by ``find_poems``) or ``poems:PATH`` (a file or folder), read by
    ``load_corpus``."""
    head, sep, path = name.partition(":")
    if head != "poems" or (sep and not path):
        raise DatasetError(f"unknown text dataset {name!r}; use poems or poems:PATH")
    root = Path(path).expanduser() if sep else find_poems(data_dir)
    return load_corpus(root, name=name, forms=forms, min_count=min_count, simplified=simplified,
                       test_fraction=test_fraction, progress=progress)


def _load_poems(cfg: DataConfig, argument: str | None, progress: bool) -> TextDataset:
    root = Path(argument).expanduser() if argument is not None else find_poems(cfg.data_dir)
    data = load_corpus(root, name=cfg.name, forms=cfg.forms, min_count=cfg.min_count, simplified=cfg.simplified,
                       progress=progress)
    if progress:
        print(data.summary(), file=sys.stderr)
    return data


DATASETS.add("poems", DatasetEntry(
    "poems", "text: the Complete Tang Poems (chinese-poetry JSON, searched like the IDX datasets), as couplets",
    _load_poems, kind="text", argument="PATH", argument_required=False,
    argument_summary="text: a chinese-poetry JSON file, a text file of one sample per line, or a folder of them"))
