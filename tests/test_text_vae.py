"""The poem VAE (text-vae): the math it claims, a tiny model that reconstructs a tiny corpus, interpolation
endpoints, the GRU option's KL reporting, evaluation, and the CLI end to end on a hand-made corpus."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data.text import TextDataset, format_poem, load_text_dataset
from genlab.errors import ConfigError
from genlab.metrics.text import novelty, reconstruction_accuracy
from genlab.models.text_vae import GatedConv1d, TextVAE, TextVAEConfig

COUPLETS = ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。", "床前明月光，疑是地上霜。",
            "舉頭望明月，低頭思故鄉。", "千山鳥飛絕，萬徑人蹤滅。", "孤舟蓑笠翁，獨釣寒江雪。",
            "春眠不覺曉，處處聞啼鳥。", "夜來風雨聲，花落知多少。"]
TINY = dict(embed_dim=32, channels=32, latent_dim=8, kl_warmup=0)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(COUPLETS) + "\nnot a couplet\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(corpus_file: Path) -> TextDataset:
    return load_text_dataset(f"poems:{corpus_file}", progress=False)


def _fit(model: TextVAE, tokens: torch.Tensor, steps: int, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        model.train_step({"tokens": tokens}, {"model": opt}, step)
    model.eval()


@pytest.fixture(scope="module")
def trained(tiny: TextDataset) -> TextVAE:
    """A tiny conv model fitted to the 7 training couplets (a small beta: reconstruction is the point here)."""
    torch.manual_seed(0)
    model = TextVAE(TextVAEConfig(**TINY, beta=0.05), tiny.spec)
    _fit(model, tiny.train_tokens, 80, lr=2e-2)
    return model


# --- the math ---

def test_gated_conv_is_residual_and_gated() -> None:
    block = GatedConv1d(4, 3)
    x = torch.randn(2, 4, 7)
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, -1e4, 1e4]))
        y = block(x)  # a = bias[:4], gate = sigmoid(bias[4:]) = (0.5, 0.5, 0, 1)
    expected = x + torch.tensor([0.5, 1.0, 0.0, 4.0]).view(1, 4, 1)
    assert torch.allclose(y, expected, atol=1e-5)


def test_loss_is_summed_cross_entropy_plus_kl_per_example(tiny: TextDataset) -> None:
    torch.manual_seed(0)
    model = TextVAE(TextVAEConfig(**TINY), tiny.spec).eval()
    x = tiny.train_tokens[:4]
    with torch.random.fork_rng():
        torch.manual_seed(3)
        terms = model.loss({"tokens": x})
    with torch.random.fork_rng():
        torch.manual_seed(3)
        mu, logvar = model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logp = torch.log_softmax(model.logits(z, x), -1).gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, L)
    recon = -logp.sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    assert torch.allclose(terms["recon"], recon.mean(), rtol=1e-5)
    assert torch.allclose(terms["kl"], kl.mean(), rtol=1e-5)
    assert torch.allclose(terms["elbo"], -(recon + kl).mean(), rtol=1e-5)
    # an untrained model is near uniform: about log V nats per character, ten characters per line
    assert abs(terms["recon"].item() / 10 - math.log(len(tiny.vocab))) < 0.5
    assert 0.0 <= terms["char_accuracy"].item() <= 1.0


def test_kl_warmup_weights_the_kl(tiny: TextDataset) -> None:
    model = TextVAE(TextVAEConfig(**{**TINY, "kl_warmup": 100}), tiny.spec)
    assert model._kl_weight(0) == 0.0 and model._kl_weight(50) == 0.5 and model._kl_weight(None) == 1.0
    batch = {"tokens": tiny.train_tokens}
    torch.manual_seed(1)
    at0 = model.loss(batch, step=0)
    assert torch.allclose(at0["loss"], at0["recon"])


def test_bad_configs_are_config_errors(tiny: TextDataset, digits_spec: object = None) -> None:
    for bad in ({"decoder": "lstm"}, {"kernel": 2}, {"word_dropout": 0.2}, {"word_dropout": 1.0, "decoder": "gru"},
                {"latent_dim": 0}):
        with pytest.raises(ConfigError):
            TextVAE(TextVAEConfig(**bad), tiny.spec)
    image_spec = genlab.load_dataset("digits", progress=False).spec
    with pytest.raises(ConfigError, match="not a text dataset"):
        TextVAE(TextVAEConfig(), image_spec)


# --- a tiny model on a tiny corpus ---

def test_tiny_model_reconstructs_the_tiny_corpus(trained: TextVAE, tiny: TextDataset) -> None:
    recon = trained.reconstruct(tiny.train_tokens)
    assert trained.tokens_to_text(recon) == tiny.texts("train")
    assert reconstruction_accuracy(trained, tiny, "train") == 1.0


def test_interpolation_endpoints_decode_to_the_given_lines(trained: TextVAE, tiny: TextDataset) -> None:
    a, b = (format_poem(t) for t in tiny.texts("train")[:2])
    path = genlab.interpolate(trained, a, b.rstrip("。"), steps=6)  # punctuation is optional
    assert len(path) == 6 and path[0] == a and path[-1] == b
    assert all(len(p) == 12 and p[5] == "，" and p[-1] == "。" for p in path)
    with pytest.raises(ConfigError, match="steps"):
        trained.interpolate_text(a, b, 1)


def test_samples_are_formatted_and_reproducible(trained: TextVAE) -> None:
    a = genlab.sample_text(trained, 5, seed=1)
    assert a == genlab.sample_text(trained, 5, seed=1)
    assert all(len(s) == 12 and s[5] == "，" and s.endswith("。") for s in a)
    hot = genlab.sample_text(trained, 5, seed=1, temperature=1.0)
    assert hot == genlab.sample_text(trained, 5, seed=1, temperature=1.0)
    argmax_tokens = trained.sample(50, generator=torch.Generator().manual_seed(2), temperature=0)
    hot_tokens = trained.sample(50, generator=torch.Generator().manual_seed(2), temperature=5.0)
    assert not torch.equal(argmax_tokens, hot_tokens)  # a hot softmax wanders off the argmax


def test_novelty_fractions() -> None:
    corpus = frozenset({"a", "b"})
    out = novelty(["a", "c", "c", "d"], corpus)
    assert out == {"new_fraction": 0.75, "distinct_fraction": 0.75, "new_distinct_fraction": 0.5}


def test_gru_decoder_word_dropout_and_collapse_report(tiny: TextDataset) -> None:
    torch.manual_seed(0)
    cfg = TextVAEConfig(embed_dim=16, channels=16, latent_dim=4, decoder="gru", gru_hidden=32, kl_warmup=20,
                        word_dropout=0.5)
    model = TextVAE(cfg, tiny.spec)
    x = tiny.train_tokens
    model.train()
    torch.manual_seed(1)
    z = torch.zeros(len(x), 4)
    a, b = model.logits(z, x), model.logits(z, x)
    assert not torch.equal(a, b)  # word dropout draws which inputs become UNK
    model.eval()
    assert torch.equal(model.logits(z, x), model.logits(z, x))  # no dropout in evaluation
    _fit(model, x, 120, lr=1e-2)
    result = genlab.evaluate(model, tiny, latent=False, quality=True, quality_n=50, progress=False)
    assert isinstance(result["test/kl_collapsed"], bool)
    assert result["test/kl_collapsed"] == (result["test/kl"] < 0.5)
    greedy = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert greedy.shape == (3, 10)


def test_evaluate_reports_accuracy_elbo_per_char_and_novelty(trained: TextVAE, tiny: TextDataset) -> None:
    r = genlab.evaluate(trained, tiny, quality=True, quality_n=200, progress=False)
    assert r["test/elbo_per_char"] == pytest.approx(r["test/elbo"] / 10)
    assert 0.0 <= r["test/recon_accuracy"] <= 1.0 and r["protocol/test_examples"] == len(tiny.test_tokens) == 1
    for key in ("novelty/new_fraction", "novelty/distinct_fraction", "novelty/new_distinct_fraction"):
        assert 0.0 <= r[key] <= 1.0
    assert r["protocol/quality_n"] == 200 and len(r["novelty/examples"]) == 10
    assert r["latent/latent_dim"] == 8 and "latent/active_units" in r
    assert "test/nll" not in r  # no importance-weighted bound for text: nothing is claimed that was not computed


# --- CLI end to end ---

def test_cli_train_sample_interpolate_eval_plot(corpus_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "text-vae", "--data", f"poems:{corpus_file}", "--out", str(run), "--epochs", "60",
                 "--batch-size", "8", "--lr", "1e-2", "--no-progress", "--model.embed_dim=32",
                 "--model.channels=32", "--model.latent_dim=8", "--model.kl_warmup=0", "--model.beta=0.05",
                 "--train.threads=1"]) == 0
    assert (run / "report.html").is_file() and (run / "figures" / "curves.png").is_file()
    report = (run / "report.html").read_text(encoding="utf-8")
    assert "samples" in report and "interpolation" in report and "，" in report
    meta = json.loads((run / "checkpoints" / "model.json").read_text(encoding="utf-8"))
    assert meta["data_spec"]["vocab"][:3] == ["<pad>", "<unk>", "<bos>"]  # the vocabulary, as JSON
    capsys.readouterr()

    assert main(["sample", str(run), "-n", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 20 and all(len(s) == 12 and s[5] == "，" and s[-1] == "。" for s in lines)
    assert main(["sample", str(run), "-n", "3", "--temperature", "0.7", "--seed", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3

    first, last = COUPLETS[0], COUPLETS[1]
    model = genlab.load(run)
    train_texts = {format_poem(t) for t in load_text_dataset(f"poems:{corpus_file}", progress=False).texts("train")}
    assert main(["interpolate", str(run), first, last, "--steps", "8"]) == 0
    path = capsys.readouterr().out.strip().splitlines()
    assert len(path) == 8
    if first in train_texts and last in train_texts and model.interpolate_text(first, last, 2) == [first, last]:
        assert path[0] == first and path[-1] == last

    assert main(["eval", str(run), "-n", "100", "--no-progress", "--no-report"]) == 0
    out = capsys.readouterr().out
    for key in ("test/recon_accuracy", "test/elbo_per_char", "test/kl_collapsed", "novelty/new_fraction",
                "novelty/distinct_fraction"):
        assert key in out
    result = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    assert result["protocol/quality_n"] == 100
    assert main(["plot", str(run)]) == 0
    assert "Novelty of samples" in (run / "report.html").read_text(encoding="utf-8")
    assert main(["reconstruct", str(run), "-n", "1"]) == 0
    assert "->" in capsys.readouterr().out
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp.html"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "new & distinct" in table and "text-vae" not in table.splitlines()[0]
    page = (tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert "<pre class='poems'>" in page and "，" in page


def test_cli_errors_are_one_line(corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "text-vae", "--data", f"poems:{tmp_path / 'nope.json'}", "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    assert main(["train", "text-vae", "--data", f"poems:{bad}", "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["train", "text-vae", "--data", "digits", "--out", str(tmp_path / "r3"), "--no-progress"]) == 2
    assert "not a text dataset" in capsys.readouterr().err
    assert main(["train", "text-vae", "--data", f"poems:{corpus_file}", "--out", str(tmp_path / "r4"),
                 "--no-progress", "--data.forms=sonnet"]) == 2
    assert "unknown text form" in capsys.readouterr().err

    run = tmp_path / "ok"
    assert main(["train", "text-vae", "--data", f"poems:{corpus_file}", "--out", str(run), "--max-steps", "1",
                 "--epochs", "1", "--no-progress", "--no-figures", "--model.embed_dim=8", "--model.channels=8",
                 "--model.latent_dim=2"]) == 0
    capsys.readouterr()
    assert main(["interpolate", str(run), "hello", "白日依山盡，黃河入海流"]) == 2
    assert "not Chinese" in capsys.readouterr().err
    assert main(["interpolate", str(run), "朝辭白帝彩雲間，千里江陵一日還", "白日依山盡，黃河入海流"]) == 2
    assert "at most 10" in capsys.readouterr().err
    assert main(["sample", str(run), "--label", "1"]) == 2
    assert "unconditional" in capsys.readouterr().err
    digits_run = tmp_path / "digits"
    assert main(["train", "vae", "--data", "digits", "--out", str(digits_run), "--max-steps", "1", "--epochs", "1",
                 "--no-progress", "--no-figures"]) == 0
    capsys.readouterr()
    assert main(["interpolate", str(digits_run), "a", "b"]) == 2
    assert "models images" in capsys.readouterr().err
    assert main(["sample", str(digits_run), "--temperature", "1"]) == 2
    assert "text models" in capsys.readouterr().err
