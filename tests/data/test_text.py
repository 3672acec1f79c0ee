"""Poem and line corpora (genlab.data.text): extraction from small hand-made corpora, skips counted by reason,
clear errors, the vocabulary round trip, the named corpus's search order, Simplified conversion."""
from __future__ import annotations

import json
import os
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

from genlab.data import load_dataset
from genlab.data.text import (
    PAD,
    UNK,
    UNK_CHAR,
    Vocabulary,
    extract_samples,
    find_poems,
    format_poem,
    load_text_dataset,
    parse_line,
)
from genlab.errors import DatasetError

POEM_A = {"author": "王之渙", "title": "登鸛雀樓",
          "paragraphs": ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"]}
POEM_B = {"author": "李白", "title": "靜夜思", "paragraphs": ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"]}
POEM_7 = {"title": "seven", "paragraphs": ["朝辭白帝彩雲間，千里江陵一日還。",
                                           "兩岸猿聲啼不住，輕舟已過萬重山。"]}


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


# --- extraction ---

def test_couplets_from_json_with_every_kind_of_bad_entry_counted(tmp_path: Path) -> None:
    poems = [
        POEM_A,
        POEM_B,
        {"title": "no paragraphs"},  # no_paragraphs
        "not an object",  # no_paragraphs
        {"paragraphs": "a string, not a list"},  # no_paragraphs
        {"paragraphs": ["", "白日依山盡，黃河入海流。"]},  # empty + a duplicate
        {"paragraphs": ["山高月小，水落石出。"]},  # four-character lines: wrong_length
        {"paragraphs": ["白日依山盡，黃河入海流，欲窮千里目。"]},  # three lines: odd_lines
        {"paragraphs": ["Hello，world。", "白日依□盡，黃河入海流。"]},  # non_cjk twice
    ]
    d = load_text_dataset(f"poems:{_write(tmp_path / 'p.json', poems)}", progress=False)
    s = d.stats
    assert (s["no_paragraphs"], s["empty"], s["wrong_length"], s["odd_lines"], s["non_cjk"],
            s["duplicates"]) == (3, 1, 1, 1, 2, 1)
    assert s["kept"] == 4 and s["poems"] == 9 and s["files"] == 1
    assert sorted(d.corpus) == sorted(["白日依山盡黃河入海流", "欲窮千里目更上一層樓", "床前明月光疑是地上霜",
                                       "舉頭望明月低頭思故鄉"])
    assert len(d.train_tokens) + len(d.test_tokens) == 4 and len(d.test_tokens) == 1
    assert d.spec.shape == (10,) and d.spec.vocab == d.vocab.tokens
    summary = d.summary()
    assert "4 distinct couplet5" in summary and "3 no paragraphs" in summary and "2 non cjk" in summary


def test_plain_text_lines_with_and_without_punctuation(tmp_path: Path) -> None:
    lines = ["白日依山盡，黃河入海流。", "欲窮千里目更上一層樓", "", "   ", "床前明月光, 疑是地上霜.", "too short",
             "床前明月光，疑是地上", "舉頭望明月，低頭思故鄉。"]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    d = load_text_dataset(f"poems:{path}", progress=False)
    assert d.stats["kept"] == 4 and d.stats["empty"] == 2 and d.stats["non_cjk"] == 1
    assert d.stats["wrong_length"] == 1 and d.stats["lines"] == 8
    assert "床前明月光疑是地上霜" in d.corpus


def test_forms_seven_character_couplets_and_quatrains(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", [POEM_A, POEM_B, POEM_7])
    q = load_text_dataset(f"poems:{path}", forms=("quatrain5",), progress=False)
    assert q.corpus == {"白日依山盡黃河入海流欲窮千里目更上一層樓", "床前明月光疑是地上霜舉頭望明月低頭思故鄉"}
    assert q.spec.shape == (20,)
    mixed = load_text_dataset(f"poems:{path}", forms=("couplet5", "couplet7", "quatrain7"), progress=False)
    assert mixed.spec.shape == (28,) and "朝辭白帝彩雲間千里江陵一日還" in mixed.corpus
    assert len(mixed.corpus) == 4 + 2 + 1
    tokens = torch.cat([mixed.train_tokens, mixed.test_tokens])
    lengths = sorted((tokens != 0).sum(1).tolist())  # PAD-padded to 28
    assert lengths == [10, 10, 10, 10, 14, 14, 28]
    with pytest.raises(DatasetError, match="unknown text form"):
        load_text_dataset(f"poems:{path}", forms=("haiku",), progress=False)


def test_extract_samples_counts_candidates() -> None:
    stats: Counter = Counter()
    out = list(extract_samples(["白日依山盡，黃河入海流。", "abc", ""], ["couplet5"], stats, poems=False))
    assert out == ["白日依山盡黃河入海流"]
    assert stats["candidates"] == 3 and stats["non_cjk"] == 1 and stats["empty"] == 1


def test_malformed_and_unreadable_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"paragraphs": ["白日依山盡，黃河入海流。"]', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON .*line 1"):
        load_text_dataset(f"poems:{bad}", progress=False)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_text_dataset(f"poems:{latin1}", progress=False)
    number = _write(tmp_path / "number.json", 42)
    with pytest.raises(DatasetError, match="expected a JSON list of poems"):
        load_text_dataset(f"poems:{number}", progress=False)
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_text_dataset(f"poems:{tmp_path / 'missing'}", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .json or .txt files"):
        load_text_dataset(f"poems:{tmp_path / 'empty'}", progress=False)
    few = tmp_path / "few.txt"
    few.write_text("hello\n白日依山盡，黃河入海流。\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="found 1 couplet5 sample.*non_cjk: 1"):
        load_text_dataset(f"poems:{few}", progress=False)


def test_folder_reads_json_and_text_and_split_is_fixed(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", [POEM_A, POEM_B])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("千山鳥飛絕，萬徑人蹤滅。\n孤舟蓑笠翁，獨釣寒江雪。\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    a = load_text_dataset(f"poems:{tmp_path}", progress=False)
    b = load_text_dataset(f"poems:{tmp_path}", progress=False)
    assert a.stats["files"] == 2 and len(a.corpus) == 6
    assert torch.equal(a.test_tokens, b.test_tokens) and torch.equal(a.train_tokens, b.train_tokens)
    batches = list(a.batches("train", 2, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert set(batches[0]) == {"tokens"} and batches[0]["tokens"].dtype == torch.int64
    assert sum(len(x["tokens"]) for x in batches) == len(a) == a.num_batches("train", 1)


def test_load_dataset_dispatches_text_and_rejects_text_options_for_images(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", [POEM_A, POEM_B])
    d = load_dataset(f"poems:{path}", min_count=2, progress=False)
    train = load_dataset(f"poems:{path}", progress=False).texts("train")  # same split; min_count 1: exact text
    counts = Counter("".join(train))  # the vocabulary comes from the training split only
    common = {c for c, n in counts.items() if n >= 2}
    assert len(train) == 3 and common and set(d.vocab.tokens[3:]) == common
    assert d.stats["unk_chars"] == len(counts) - len(common)
    with pytest.raises(DatasetError, match="apply to text datasets"):
        load_dataset("digits", forms=("couplet5",))


def test_format_and_parse_lines() -> None:
    assert format_poem("白日依山盡黃河入海流") == "白日依山盡，黃河入海流。"
    assert format_poem("白日依山盡黃河入海流欲窮千里目更上一層樓") == "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。"
    assert format_poem("白日") == "白日"
    assert parse_line(" 白日依山盡，黃河入海流。") == parse_line("白日依山盡黃河入海流") == "白日依山盡黃河入海流"
    with pytest.raises(DatasetError, match="not Chinese"):
        parse_line("hello，world")
    with pytest.raises(DatasetError, match="length does not fit"):
        parse_line("白日依山盡")


# --- vocabulary ---

def test_vocabulary_round_trip_min_count_pad_and_unk(tmp_path: Path) -> None:
    vocab = Vocabulary.build(["明月明月光", "明山"], min_count=2)
    assert vocab.tokens == (PAD, UNK, "<bos>", "明", "月")  # by count, then code point; 光 and 山 are rare
    ids = vocab.encode("明光月", length=5)
    assert ids == [3, 1, 4, 0, 0]
    assert vocab.decode(ids) == f"明{UNK_CHAR}月"
    assert vocab.unknown("明光山") == ["光", "山"]
    loaded = Vocabulary.load(vocab.save(tmp_path / "vocab.json"))
    assert loaded == vocab and loaded.encode("明光月", length=5) == ids
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))["tokens"][3] == "明"
    batch = vocab.encode_batch(["明月", "月"], 3)
    assert batch.tolist() == [[3, 4, 0], [4, 0, 0]] and batch.dtype == torch.int64
    with pytest.raises(DatasetError, match="at most 2"):
        vocab.encode("明月光", length=2)
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a genlab vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="starts with"):
        Vocabulary(["a", "b"])
    with pytest.raises(DatasetError, match="min_count"):
        Vocabulary.build(["明"], min_count=0)


# --- the named corpus ---

def test_named_poems_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("genlab.data.sources.SYSTEM_DATA_DIRS", ())
    env = tmp_path / "env"
    monkeypatch.setenv("GENLAB_DATA", str(env))
    with pytest.raises(DatasetError, match=r"poems corpus was not found; searched .*env.chinese-poetry"):
        find_poems()
    folder = env / "chinese-poetry" / "quantangshi"
    folder.mkdir(parents=True)
    _write(folder / "poet.tang.0.json", [POEM_A, POEM_B])
    assert find_poems() == folder
    explicit = tmp_path / "mine"
    explicit.mkdir()
    _write(explicit / "x.json", [POEM_A, POEM_B, POEM_7])
    assert find_poems(explicit) == explicit  # an explicit folder wins
    d = load_text_dataset("poems", data_dir=explicit, forms=("couplet7",), progress=False)
    assert d.spec.name == "poems" and len(d.corpus) == 2
    with pytest.raises(DatasetError, match="no such directory"):
        find_poems(tmp_path / "typo")


@pytest.mark.skipif(not os.environ.get("GENLAB_DATA"), reason="needs GENLAB_DATA (set by make test)")
@pytest.mark.slow
def test_tang_corpus_counts() -> None:
    d = load_text_dataset("poems", min_count=2, progress=False)
    assert 150_000 < d.stats["kept"] < 165_000 and 6_000 < len(d.vocab) < 7_500
    assert "白日依山盡黃河入海流" in d.corpus


# --- Simplified characters ---

def test_simplified_needs_a_converter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "opencc", None)  # import fails as if it were not installed
    path = _write(tmp_path / "p.json", [POEM_A, POEM_B])
    with pytest.raises(DatasetError, match="pip install opencc"):
        load_text_dataset(f"poems:{path}", simplified=True, progress=False)


def test_simplified_conversion_is_applied_before_dedup_and_vocabulary(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    table = str.maketrans("黃窮層頭鄉", "黄穷层头乡")

    class FakeOpenCC:  # the opencc interface: OpenCC(config).convert(text)
        def __init__(self, config: str):
            assert config.startswith("t2s")

        def convert(self, text: str) -> str:
            return text.translate(table)

    monkeypatch.setitem(sys.modules, "opencc", types.SimpleNamespace(OpenCC=FakeOpenCC))
    path = _write(tmp_path / "p.json", [POEM_A, POEM_B, {"paragraphs": ["白日依山盡，黄河入海流。"]}])
    d = load_text_dataset(f"poems:{path}", simplified=True, progress=False)
    assert "白日依山盡黄河入海流" in d.corpus and "欲穷千里目更上一层楼" not in d.corpus  # 樓 is not in the table
    assert d.stats["duplicates"] == 1  # the simplified 黃 -> 黄 line equals the third poem's
    assert "黃" not in d.vocab.index


def test_real_opencc_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("opencc")
    path = _write(tmp_path / "p.json", [POEM_A, POEM_B])
    d = load_text_dataset(f"poems:{path}", simplified=True, progress=False)
    assert "白日依山尽黄河入海流" in d.corpus
