"""The character vocabulary of text models: characters <-> ids, with PAD, UNK and BOS first, stored as JSON."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from genlab.errors import DatasetError
from genlab.files import MAX_JSON_BYTES, parse_json, write_text

__all__ = ["PAD", "UNK", "BOS", "SPECIALS", "UNK_CHAR", "Vocabulary"]

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)  # ids 0, 1, 2 in every vocabulary
UNK_CHAR = "□"  # how an unknown character is printed


class Vocabulary:
    """Characters <-> ids. Ids 0, 1, 2 are PAD, UNK and BOS; the rest are characters by descending count.

    Stored as JSON (``to_json``/``save``), never pickled; a model keeps it in its DataSpec (``spec.vocab``), which
    the checkpoint writes to ``model.json`` beside the weights, so a loaded model decodes the same way."""

    def __init__(self, tokens: Sequence[str]):
        tokens = tuple(tokens)
        if tokens[:len(SPECIALS)] != SPECIALS:
            raise DatasetError(f"a vocabulary starts with {SPECIALS}; this one starts with {tokens[:3]}")
        if len(set(tokens)) != len(tokens):
            raise DatasetError("a vocabulary lists some token twice")
        bad = [t for t in tokens[len(SPECIALS):] if len(t) != 1]
        if bad:
            raise DatasetError(f"vocabulary entries after the specials are single characters, not {bad[:3]}")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    pad_id, unk_id, bos_id = 0, 1, 2

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "Vocabulary":
        """Every character seen at least ``min_count`` times, most frequent first (ties by code point)."""
        if min_count < 1:
            raise DatasetError(f"data.min_count must be >= 1, got {min_count}")
        counts = Counter(c for t in texts for c in t)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(SPECIALS + tuple(chars))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def encode(self, text: str, length: int | None = None) -> list[int]:
        """Ids of ``text``'s characters (unknown ones -> UNK), padded with PAD to ``length``."""
        ids = [self.index.get(c, self.unk_id) for c in text]
        if length is not None:
            if len(ids) > length:
                raise DatasetError(f"{text!r} has {len(ids)} characters; this model takes at most {length}")
            ids += [self.pad_id] * (length - len(ids))
        return ids

    def encode_batch(self, texts: Sequence[str], length: int) -> torch.Tensor:
        """(N, length) int64 ids."""
        out = np.zeros((len(texts), length), dtype=np.int64)  # PAD is 0
        index, unk = self.index, self.unk_id
        for row, text in enumerate(texts):
            out[row, :len(text)] = [index.get(c, unk) for c in text]
        return torch.from_numpy(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Characters up to the first PAD; UNK prints as UNK_CHAR, BOS is dropped."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.pad_id:
                break
            if i == self.bos_id:
                continue
            chars.append(UNK_CHAR if i == self.unk_id or i >= len(self.tokens) else self.tokens[i])
        return "".join(chars)

    def unknown(self, text: str) -> list[str]:
        """The characters of ``text`` that are not in the vocabulary."""
        return sorted({c for c in text if c not in self.index})

    def to_json(self) -> str:
        return json.dumps({"tokens": list(self.tokens)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        try:
            tokens = parse_json(text)["tokens"]
        except (ValueError, TypeError, KeyError) as e:
            raise DatasetError(f"not a genlab vocabulary ({' '.join(str(e).split())}); expected JSON "
                               "{\"tokens\": [...]}") from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DatasetError("not a genlab vocabulary: 'tokens' must be a list of strings")
        return cls(tokens)

    def save(self, path: str | os.PathLike) -> Path:
        return write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        try:
            if Path(path).stat().st_size > MAX_JSON_BYTES:
                raise DatasetError(f"{path} is over {MAX_JSON_BYTES // 2**20} MiB, too large for a vocabulary")
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise DatasetError(f"{path}: not a genlab vocabulary (not UTF-8 text)") from None
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the vocabulary ({e.strerror or e})") from None
