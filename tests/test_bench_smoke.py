"""The benchmark harness in bench/: the MAC-counting rule, and a smoke run of each benchmark (timings are recorded,
never asserted: benchmarks are not timed tests). The pythae column needs pythae, a benchmark-only package that
`make bench` installs; its test skips when pythae is not installed, the rest always runs."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench import (
    ar_head,
    distributed,
    import_time,
    nll_eval,
    pixel_sampling,
    pixelcnn_step,
    precision,
    time_to_elbo,
    time_to_quality,
    vae_conv_epoch,
    vae_mlp_epoch,
    whole_process,
)
from bench.flops import achieved_gflops, dense_step_products, forward_macs
from bench.machine import best_seconds_per_call, matmul_gflops_by_size
from bench.peers.conv_vae_loop import ConvVAE
from bench.results import TABLES_BEGIN, TABLES_END, refresh_readme, write_results
from bench.runs import floor_seconds
from genlab.config import build_config
from genlab.data import DataSpec
from genlab.registry import MODELS
from genlab.train.trainer import cpu_computes_bf16

from helpers import SHARED_DATA, needs_shared

# --- counting work ---

def _step_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Flops of matmuls and convolutions in one forward + backward, as torch's own counter sees them."""
    with FlopCounterMode(display=False) as counter:
        model(x).square().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("build,shape", [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40), nn.Linear(40, 784)),
     (16, 1, 28, 28)),
    (lambda: nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                           nn.ConvTranspose2d(16, 4, 4, stride=2, padding=1)), (4, 1, 12, 12)),
], ids=["mlp", "conv"])
def test_train_step_macs_rule_matches_torch_flop_counter(build, shape):
    torch.manual_seed(0)
    model, x = build(), torch.rand(shape)
    count = forward_macs(model, lambda: model(x))
    assert len(count.layers) == sum(isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) for m in model)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    assert 2 * count.forward == fwd.get_total_flops()
    assert 2 * count.train_step == _step_flops(model, x)  # 3 x forward - the first layer's input gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_products_alone_are_the_train_steps_products(dtype):
    """``dense_step_products`` runs, for the shapes ``forward_macs`` saw, exactly the products a training step of the
    MLP computes: torch's counter finds the multiply-adds of the train-step rule, in the products genlab's hand step
    calls (addmm forward, one mm per weight gradient, one per input gradient but the first layer's)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 6), nn.Linear(6, 784))
    x = torch.rand(16, 1, 28, 28)
    count = forward_macs(model, lambda: model(x))
    assert count.dense == [(16, 784, 40), (16, 40, 6), (16, 6, 784)]
    products, macs = dense_step_products(count.dense, dtype)
    assert macs == count.train_step
    with FlopCounterMode(display=False) as counter:
        products()
    assert counter.get_total_flops() == 2 * macs == _step_flops(model, x)
    ops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    weights = 784 * 40 + 40 * 6 + 6 * 784  # the forward and each weight gradient; the input gradients skip 784 * 40
    assert ops == {"addmm": 2 * 16 * weights, "mm": 2 * 16 * (2 * weights - 784 * 40)}
    calls = []
    assert best_seconds_per_call(lambda: calls.append(1), 0.0, block=3) > 0 and len(calls) == 6  # warm-up + a block


def test_achieved_gflops_and_peak():
    assert achieved_gflops(1e9, 10, 2.0) == pytest.approx(10.0)  # 2 flops per MAC
    by_size = matmul_gflops_by_size(0.05, sizes=(64, 128))
    assert set(by_size) == {64, 128} and all(g > 0 for g in by_size.values())


def test_readme_tables_regenerated_between_markers(tmp_path):
    results, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nprose kept\n\n{TABLES_BEGIN}\nstale\n{TABLES_END}\n\ntail kept\n")
    write_results("b", {"title": "B", "command": "python b.py", "table": {"columns": ["x", "y"],
                                                                               "rows": [["1", "a|b"]]}}, results)
    write_results("a", {"title": "A", "command": "python a.py --n 1", "table": {"columns": ["x"],
                                                                                     "rows": [["2"]]}}, results)
    (results / "old.json").write_text('{"no": "table"}')  # not a table result: ignored
    text = refresh_readme(results, readme).read_text()
    assert "prose kept" in text and "tail kept" in text and "stale" not in text
    assert text.index("### A") < text.index("### B") and "python a.py --n 1" in text and "a\\|b" in text
    assert text == refresh_readme(results, readme).read_text()  # idempotent
    machine = json.loads((results / "a.json").read_text())["machine"]
    assert {"cpu", "cores", "torch", "threads", "date"} <= set(machine) and machine["threads"] >= 1


# --- smoke runs of the benchmarks ---

def _run_vae_mlp_epoch(tmp_path, monkeypatch, peers: str) -> dict:
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = vae_mlp_epoch.main(["--epochs", "1", "--limit", "512", "--peers", peers, "--peak-seconds", "0.1",
                                 "--floor-seconds", "0.2",
                                 "--results-dir", str(out), "--readme", str(tmp_path / "README.md")])
    written = json.loads((out / "vae_mlp_epoch-fashion-mnist-limit512.json").read_text())
    assert written["command"] == result["command"] and "--limit 512" in written["command"]
    assert " -m bench.vae_mlp_epoch " in written["command"]  # rerun from the repository root as a module
    assert written["train_images"] == 512 and written["threads"] == torch.get_num_threads()
    assert written["matmul_peak_gflops"] > 0 and {"cpu", "cores", "torch", "threads", "date"} <= set(written["machine"])
    (row,) = written["epochs"]
    for key in ["genlab", *(p.replace("-", "_") for p in peers.split(","))]:
        model = written["models"][key]
        assert row[f"{key}_s"] > 0 and model["median_s"] > 0
        assert 0 < row[f"{key}_gflops"] and 0 < row[f"{key}_fraction_of_peak"]
        assert 100 < row[f"{key}_test_loss"] < 600  # nats per 784-pixel image after one short epoch
        assert model["train_macs_per_step"] == 3 * model["forward_macs_per_step"] - 128 * 784 * 400
        if key != "genlab":
            assert row[f"genlab_over_{key}"] == pytest.approx(row["genlab_s"] / row[f"{key}_s"])
    assert len(written["table"]["rows"]) == 1 + len(peers.split(","))
    assert "| **genlab** |" in (tmp_path / "README.md").read_text()
    peaks = written["matmul_peak_gflops_by_precision"]
    for key, model in written["models"].items():  # each run's share is of its own precision's peak
        assert row[f"{key}_fraction_of_peak"] == pytest.approx(row[f"{key}_gflops"] / peaks[model["precision"]])
    for key, parts in written["step_breakdown"].items():  # genlab's runs only, one profiled epoch each
        assert key.startswith("genlab") and set(parts) == {"dense products", "casts and copies", "optimizer",
                                                            "everything else"}
        assert sum(p["share"] for p in parts.values()) == pytest.approx(1.0)
        assert parts["dense products"]["ms_per_step"] > 0 and parts["optimizer"]["ms_per_step"] > 0
    assert any(note.startswith("Where genlab's step goes") for note in written["notes"])
    peers_run = {k for k in written["models"] if not k.startswith("genlab")}
    assert set(written["step_floor"]) == set(written["step_breakdown"])  # the hand steps
    for key, floor in written["step_floor"].items():  # their products and optimizer alone, after each round
        model = written["models"][key]
        assert len(floor["products_s"]) == len(floor["optimizer_s"]) == len(written["epochs"])
        assert floor["floor_s"] == pytest.approx(min(floor["products_s"]) + min(floor["optimizer_s"]))
        assert min(floor["products_s"]) > 0 and min(floor["optimizer_s"]) > 0
        assert floor["share_of_epoch"] == pytest.approx(floor["floor_s"] / model["median_s"])
        assert floor["products_gflops"] == pytest.approx(achieved_gflops(
            model["train_macs_per_step"], 512 / 128, min(floor["products_s"])))
        assert floor["products_fraction_of_peak"] == pytest.approx(
            floor["products_gflops"] / written["matmul_peak_gflops_by_precision"][model["precision"]])
        assert set(floor["most_over"]) == peers_run
        for peer, most in floor["most_over"].items():
            assert most == pytest.approx(written["models"][peer]["median_s"] / floor["floor_s"])
    assert any(note.startswith("The floor of the step") for note in written["notes"])
    return written


class _BrokenRun:
    label = "broken"

    def epoch(self) -> float:
        raise RuntimeError("no epoch today")


def _broken_run() -> _BrokenRun:  # module level: a spawned child unpickles it by name
    return _BrokenRun()


def test_an_isolated_run_that_fails_mid_way_is_one_line_and_is_reaped():
    from bench.runs import Isolated

    run = Isolated(_broken_run)
    assert run.label == "broken" and run.precision == "fp32"
    with pytest.raises(SystemExit, match=r"^bench: a benchmark run failed in its process: RuntimeError: no epoch "
                                         r"today$"):
        run.epoch()
    with pytest.raises(SystemExit, match="already failed"):
        run.test()
    run.close()  # no second error: the child is reaped
    assert not run._process.is_alive()


@needs_shared("fashion-mnist")
def test_the_floor_times_the_optimizer_on_copies_and_leaves_the_run_as_it_was(monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    run = vae_mlp_epoch.build_run("genlab", "fashion-mnist", 256, 1)
    run.epoch()
    weights = [p.detach().clone() for p in run.model.parameters()]
    state = {k: v.clone() if torch.is_tensor(v) else v
             for k, v in run.trainer.optimizers["model"].state_dict()["state"][0].items()}
    parts = floor_seconds(run, run.data.train_x[:128], 0.1)
    assert set(parts) == {"products", "optimizer"} and all(s > 0 for s in parts.values())
    assert all(torch.equal(p, w) for p, w in zip(run.model.parameters(), weights))  # the copies were stepped
    after = run.trainer.optimizers["model"].state_dict()["state"][0]
    assert all(torch.equal(after[k], v) if torch.is_tensor(v) else after[k] == v for k, v in state.items())


def test_an_isolated_run_that_fails_is_one_line():
    import functools

    from bench.runs import Isolated

    with pytest.raises(SystemExit, match=r"^bench: a benchmark run failed in its process: ValueError: unknown run "
                                         r"'nonesuch'$"):
        Isolated(functools.partial(vae_mlp_epoch.build_run, "nonesuch", "digits", None, 1))
    with pytest.raises(SystemExit, match=r"^bench: a benchmark run failed in its process: --data digits has images "
                                         r"of shape \(1, 8, 8\); the 784-400-20 VAE needs"):  # the child's own refusal
        Isolated(functools.partial(vae_mlp_epoch.build_run, "genlab", "digits", None, 1))


@needs_shared("fashion-mnist")
def test_vae_mlp_epoch_smoke_pytorch_examples(tmp_path, monkeypatch):
    _run_vae_mlp_epoch(tmp_path, monkeypatch, "pytorch-examples")


@needs_shared("fashion-mnist")
@pytest.mark.skipif(importlib.util.find_spec("pythae") is None,
                    reason="pythae is not installed (a benchmark-only peer: `make bench` or `.venv/bin/pip install "
                           "pythae`); the pythae column is not checked")
def test_vae_mlp_epoch_smoke_pythae(tmp_path, monkeypatch):
    written = _run_vae_mlp_epoch(tmp_path, monkeypatch, "pythae")
    assert written["models"]["pythae"]["label"].startswith("pythae ")


@needs_shared("fashion-mnist")
@pytest.mark.skipif(not cpu_computes_bf16(), reason="this CPU has neither AVX512-BF16 nor AMX: the genlab-bf16 "
                                                    "column is measured only where bf16 is native")
def test_vae_mlp_epoch_smoke_genlab_bf16(tmp_path, monkeypatch):
    written = _run_vae_mlp_epoch(tmp_path, monkeypatch, "genlab-bf16")
    assert written["models"]["genlab_bf16"]["label"] == "genlab bf16"
    assert written["models"]["genlab_bf16"]["precision"] == "bf16"
    assert "bf16" in written["matmul_peak_gflops_by_precision"]
    casts = {k: b["casts and copies"]["calls_per_step"] for k, b in written["step_breakdown"].items()}
    assert casts["genlab_bf16"] > casts["genlab"] + 10  # the weights and activations cast to bf16 and back


@needs_shared("fashion-mnist")
def test_vae_mlp_epoch_smoke_genlab_autograd(tmp_path, monkeypatch):
    """The run through autograd trains the same network from the same weights and noise: after one short epoch its
    test loss is genlab's (fp32 rounding apart); it is not profiled."""
    written = _run_vae_mlp_epoch(tmp_path, monkeypatch, "genlab-autograd")
    models = written["models"]
    assert models["genlab_autograd"]["label"] == "genlab autograd"
    assert models["genlab_autograd"]["test_loss"][0] == pytest.approx(models["genlab"]["test_loss"][0], rel=1e-4)
    assert set(written["step_breakdown"]) == {"genlab"}


# --- the conv VAE: the peer's layers are genlab's conv-small, and a smoke run ---

def _conv_small_pair(seed: int = 0):
    """genlab's conv-small VAE on 28x28 grey images and the peer's ConvVAE, each built right after ``seed``."""
    cfg = build_config("vae", "mnist", preset="conv-small")
    torch.manual_seed(seed)
    genlab_model = MODELS.get("vae")(cfg.model_config, DataSpec("mnist", (1, 28, 28)))
    torch.manual_seed(seed)
    peer = ConvVAE(cfg.model_config.latent_dim)
    return genlab_model, peer


def test_conv_peer_has_the_layers_of_genlab_conv_small():
    genlab_model, peer = _conv_small_pair()
    ours, theirs = list(genlab_model.parameters()), list(peer.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]  # the same layers in the same order
    assert sum(p.numel() for p in ours) == sum(p.numel() for p in theirs) == 1_677_509
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))  # built in the same order: same initial weights

    x = torch.rand(8, 1, 28, 28)
    ours_macs = forward_macs(genlab_model, lambda: genlab_model.loss({"x": x}))
    theirs_macs = forward_macs(peer, lambda: peer(x))
    assert [m for _, m in ours_macs.layers] == [m for _, m in theirs_macs.layers]
    assert ours_macs.forward == 8 * (32 * 14 * 14 * 16 + 64 * 7 * 7 * 32 * 16 + 3136 * 256 + 256 * 4  # encoder
                                     + 2 * 256 + 256 * 3136 + 64 * 7 * 7 * 32 * 16 + 32 * 14 * 14 * 16)  # decoder

    with torch.no_grad():  # and they compute the same function
        mu, logvar = genlab_model.encode(x)
        peer_mu, peer_logvar = peer.encode(x)
        torch.testing.assert_close(peer_mu, mu)
        torch.testing.assert_close(peer_logvar, logvar)
        torch.testing.assert_close(peer.decode(mu), genlab_model.decode(mu))


@needs_shared("mnist")
def test_vae_conv_epoch_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = vae_conv_epoch.main(["--epochs", "1", "--limit", "512", "--peak-seconds", "0.1",
                                  "--results-dir", str(out), "--readme", str(tmp_path / "README.md")])
    written = json.loads((out / "vae_conv_epoch-mnist-limit512.json").read_text())
    assert written["command"] == result["command"] and "--limit 512" in written["command"]
    assert written["train_images"] == 512 and written["threads"] == torch.get_num_threads()
    assert written["matmul_peak_gflops"] > 0 and {"cpu", "cores", "torch", "threads", "date"} <= set(written["machine"])
    (row,) = written["epochs"]
    bf16 = cpu_computes_bf16()  # the bf16 runs only where the CPU computes bf16 natively
    keys = ["genlab", "genlab_channels_last", *(["genlab_bf16", "genlab_bf16_channels_last"] if bf16 else []),
            "pytorch_examples"]
    assert list(written["models"]) == keys
    peaks = written["matmul_peak_gflops_by_precision"]
    assert set(peaks) == ({"fp32", "bf16"} if bf16 else {"fp32"})
    for key in keys:
        model = written["models"][key]
        assert model["precision"] == ("bf16" if "bf16" in key else "fp32")
        assert row[f"{key}_s"] > 0 and model["median_s"] > 0
        assert row[f"{key}_fraction_of_peak"] == pytest.approx(row[f"{key}_gflops"] / peaks[model["precision"]])
        assert 100 < row[f"{key}_test_loss"] < 600  # nats per 784-pixel image after four steps
        assert model["parameters"] == 1_677_509
        assert model["train_macs_per_step"] == written["models"]["genlab"]["train_macs_per_step"]
        assert model["train_macs_per_step"] == 3 * model["forward_macs_per_step"] - 128 * 32 * 14 * 14 * 16
        if key != "genlab":
            assert row[f"genlab_over_{key}"] == pytest.approx(row["genlab_s"] / row[f"{key}_s"])
    assert list(written["variants"]) == [k for k in keys if k.startswith("genlab_")]
    for key, variant in written["variants"].items():  # both numbers: the variant's test loss and the default's
        assert variant["test_loss"] == written["models"][key]["test_loss"]
        assert variant["default_test_loss"] == written["models"]["genlab"]["test_loss"]
        assert variant["speedup"] == pytest.approx(written["models"]["genlab"]["median_s"]
                                                   / written["models"][key]["median_s"])
    cl = written["variants"]["genlab_channels_last"]
    assert cl["test_loss"][0] == pytest.approx(cl["default_test_loss"][0], rel=1e-3)  # the same steps, NHWC
    if bf16:  # four steps in bf16 products: near the fp32 steps, not the same
        assert written["variants"]["genlab_bf16"]["test_loss"][0] == pytest.approx(cl["default_test_loss"][0],
                                                                                   rel=0.02)
    assert len(written["table"]["rows"]) == len(keys)
    assert any("bf16" in n for n in written["notes"])
    assert "| **genlab** |" in (tmp_path / "README.md").read_text()


def test_vae_conv_epoch_refuses_bf16_runs_where_bf16_is_emulated(monkeypatch, capsys):
    monkeypatch.setattr(vae_conv_epoch, "cpu_computes_bf16", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        vae_conv_epoch.main(["--runs", "genlab,genlab-bf16"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "neither AVX512-BF16 nor AMX" in err and "genlab-bf16" in err
    assert "genlab-bf16" not in vae_conv_epoch._parse([]).runs  # and the default leaves them out


# --- time to quality: a smoke run of the preset pipeline (train under a time limit, then the k-sample NLL) ---

@needs_shared("mnist")
def test_time_to_quality_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = time_to_quality.main(["--time-limit", "0.5", "--k", "4", "--limit", "256", "--results-dir", str(out),
                                   "--readme", str(tmp_path / "README.md"), "--runs-dir", str(tmp_path / "runs")])
    written = json.loads((out / "time_to_quality-mnist-10min-limit256.json").read_text())
    assert written["command"] == result["command"] and written["reference_nats"] == 86.76
    (run,) = written["runs"]
    assert run["epochs"] >= 1 and run["nll_images"] == 256 and run["k"] == 4
    assert run["nll"] < -run["test_elbo"] + 5  # k=4 already about as tight as the ELBO, on a different draw of z
    assert 100 < run["nll"] < 600 and run["nll_se"] > 0 and written["peak_rss_gb"] > 0
    assert (tmp_path / "runs").is_dir() and "| **genlab** |" in (tmp_path / "README.md").read_text()
    # --run evaluates that run folder again without training, and refuses one trained with another preset
    again = time_to_quality.main(["--run", run["run"], "--time-limit", "0.5", "--k", "4", "--limit", "256",
                                  "--results-dir", str(out), "--readme", ""])
    (rerun,) = again["runs"]
    assert (rerun["epochs"], rerun["train_s"], rerun["test_elbo"]) == (run["epochs"], run["train_s"], run["test_elbo"])
    assert abs(rerun["nll"] - run["nll"]) < 5 * run["nll_se"] + 1.0  # another draw of the same estimate
    assert any("Trained earlier by" in n for n in again["notes"]) and rerun["precision"] == run["precision"] == "fp32"
    assert rerun["trained_by"] == run["trained_by"]  # the command the run folder recorded
    with pytest.raises(SystemExit, match="was not trained with --preset mnist-1h"):
        time_to_quality.main(["--run", run["run"], "--preset", "mnist-1h", "--time-limit", "0.5", "--k", "4",
                              "--results-dir", str(out), "--readme", ""])
    with pytest.raises(SystemExit, match="is not a run folder"):
        time_to_quality.main(["--run", str(tmp_path), "--k", "4", "--results-dir", str(out), "--readme", ""])


@needs_shared("mnist")
def test_time_to_quality_pixelcnn_smoke(tmp_path, monkeypatch, capsys):
    """The PixelCNN preset: dynamically binarized MNIST, scored by its exact NLL (k does not apply)."""
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out, runs = tmp_path / "results", tmp_path / "runs"
    result = time_to_quality.main(["--preset", "mnist-2h", "--time-limit", "0.5", "--limit", "128", "--results-dir",
                                   str(out), "--readme", "", "--runs-dir", str(runs)])
    (run,) = result["runs"]
    assert result["family"] == "pixelcnn" and result["reference_nats"] == 81.30
    assert "dynamically binarized" in result["title"] and "test NLL, exact" in result["table"]["columns"]
    assert run["exact"] and run["k"] is None and run["test_elbo"] is None and run["nll_images"] == 128
    assert 50 < run["nll"] < 784 * math.log(2) + 5 and run["epochs"] >= 1  # a few steps: below a fair coin's
    # --run scores the same folder again: the exact NLL is the same number, not another draw
    (again,) = time_to_quality.main(["--run", run["run"], "--preset", "mnist-2h", "--time-limit", "0.5", "--limit",
                                     "128", "--results-dir", str(out), "--readme", ""])["runs"]
    assert again["nll"] == pytest.approx(run["nll"], abs=1e-4) and again["epochs"] == run["epochs"]
    # a pixelcnn folder is not a vae preset's run, and --with-plain has no plain VAE to add beside a PixelCNN
    with pytest.raises(SystemExit, match="was not trained with --preset mnist-10min"):
        time_to_quality.main(["--run", run["run"], "--time-limit", "0.5", "--k", "4", "--results-dir", str(out),
                              "--readme", ""])
    with pytest.raises(SystemExit) as info:
        time_to_quality.main(["--preset", "mnist-2h", "--with-plain", "--results-dir", str(out), "--readme", ""])
    assert info.value.code == 2 and "mnist-2h is a pixelcnn preset" in capsys.readouterr().err


@needs_shared("mnist")
def test_nll_eval_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = nll_eval.main(["--preset", "mnist-10min", "--k", "7", "--limit", "3", "--repeats", "1",
                            "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "nll_eval-mnist-10min.json").read_text())
    assert written["identical_estimates"] is True and written["command"] == result["command"]
    assert len(written["times_s"]["per batch"]) == 1 and all(t > 0 for t in written["median_s"].values())


@needs_shared("mnist")
def test_ar_head_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = ar_head.main(["--ar-hidden", "40", "--steps", "1", "--k", "3", "--limit", "2", "--repeats", "1",
                           "--threads", "1", "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "ar_head-mnist-1h-40.json").read_text())
    assert written["command"] == result["command"] and written["ar_hidden"] == 40
    assert written["max_logit_difference"] <= 1e-5 * written["largest_logit"]  # the same numbers both ways
    assert written["max_nll_difference"] < 1e-2
    assert written["multiply_adds"]["blocks"] < written["multiply_adds"]["dense"] / 2
    assert all(len(t) == 1 and t[0] > 0 for by in written["step_times_s"].values() for t in by.values())
    with pytest.raises(SystemExit):  # a preset without a window has nothing to compare
        ar_head.main(["--preset", "mnist-10min", "--results-dir", str(out), "--readme", ""])


@needs_shared("mnist")
def test_pixelcnn_step_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))

    out = tmp_path / "results"
    result = pixelcnn_step.main(["--preset", "mnist-quick", "--steps", "1", "--threads", "1",
                                 "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "pixelcnn_step-mnist-quick.json").read_text())
    assert written["same_loss"] is True and written["command"] == result["command"]
    assert all(len(t) == 1 and t[0] > 0 for t in written["times_s"].values())


def test_pixel_sampling_smoke(tmp_path):
    out = tmp_path / "results"
    result = pixel_sampling.main(["--n", "1", "--size", "6", "--colours", "5", "--results-dir", str(out),
                                  "--readme", ""])
    written = json.loads((out / "pixel_sampling-6px.json").read_text())
    assert written["command"] == result["command"] and all(written["same_images"].values())
    assert all(t > 0 for case in written["times_s"].values() for t in case.values())


def test_serve_decode_smoke(tmp_path):
    from bench import serve_decode

    out = tmp_path / "results"
    result = serve_decode.main(["--requests", "5", "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "serve_decode.json").read_text())
    assert written["command"] == result["command"] and written["requests"] == 5
    assert all(0 < v["median"] <= v["p95"] for v in written["ms"].values())


@pytest.mark.slow  # 6 trainings and 4 evaluations, each a subprocess: about 30 s
def test_distributed_smoke(tmp_path):
    """Two trainings and two evaluations of each configuration on the embedded digits, through the launcher."""
    out = tmp_path / "results"
    result = distributed.main(["--data", "digits", "--epochs", "1", "--k", "4", "--limit", "20", "--repeats", "1",
                               "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "distributed-digits.json").read_text())
    assert written["command"] == result["command"] and written["same_nll"] is True
    assert written["weight_gap"] < 1e-4
    assert all(len(t) == 1 and t[0] > 0 for t in written["train_seconds"].values())


@pytest.mark.slow  # two or three whole processes (genlab, with auto where bf16 is native, the peer), one epoch each
@needs_shared("fashion-mnist")
def test_whole_process_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    out = tmp_path / "results"
    result = whole_process.main(["--epochs", "1", "--repeats", "1", "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "whole_process-fashion-mnist.json").read_text())
    assert written["command"] == result["command"] and "latent_map.png" in written["genlab_figures"]
    assert all(len(t) == 1 and t[0] > 0 for t in written["seconds"].values())
    assert set(written["report_s"]) == set(written["seconds"]) - {whole_process.PEER}
    assert all(0 < t[0] < s[0] for t, s in zip(written["report_s"].values(), written["seconds"].values()))
    assert all(200 < loss < 400 for loss in written["test_loss"].values())  # nats per image after one epoch


def test_whole_process_reads_the_report_time_from_genlab_trains_last_line():
    out = ("epoch 3/3  train/loss 250.251  test/loss 250.482  (7.2 s)\n"
           "figures in /tmp/x (1)/figures, report in /tmp/x (1)/report.html (2.3 s)\ntrained vae: run folder /tmp/x\n")
    assert whole_process.report_seconds(out) == 2.3
    with pytest.raises(SystemExit, match="no 'figures in"):
        whole_process.report_seconds("trained vae: run folder /tmp/x\n")


def test_import_time_smoke(tmp_path):
    out = tmp_path / "results"
    result = import_time.main(["--repeats", "1", "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "import_time.json").read_text())
    assert written["command"] == result["command"] and len(written["table"]["rows"]) == 7
    assert all(len(t) == 1 and t[0] > 0 for t in [*written["import_s"].values(), *written["process_s"].values()])
    assert set(written["import_s"]) == {import_time.GENLAB, import_time.API, import_time.TORCH, import_time.UNPAUSED}


def _run_precision(tmp_path, monkeypatch, models: str) -> dict:
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    out = tmp_path / "results"
    result = precision.main(["--models", models, "--epochs", "1", "--seeds", "1", "--limit", "256",
                             "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / f"precision-fashion-mnist-{models.replace(',', '-')}.json").read_text())
    assert written["command"] == result["command"]
    for measured in written["runs"].values():
        assert all(r["used"] == v.split("+")[0] and r["s_per_epoch"] > 0 for v, rs in measured.items() for r in rs)
    return written


@needs_shared("fashion-mnist")
def test_precision_smoke(tmp_path, monkeypatch):
    written = _run_precision(tmp_path, monkeypatch, "mlp")
    mlp = written["runs"]["mlp"]
    assert set(mlp) == ({"fp32", "bf16"} if written["native_bf16"] else {"fp32"})  # channels-last: conv nets only
    assert all(200 < r["test_loss"] < 800 for rs in mlp.values() for r in rs)


@pytest.mark.slow  # trains the DCGAN three times and a feature net for its FID: about 30 s
@needs_shared("fashion-mnist")
def test_precision_smoke_gan_fid(tmp_path, monkeypatch, feature_cache):
    monkeypatch.setenv("GENLAB_CACHE", str(feature_cache))
    written = _run_precision(tmp_path, monkeypatch, "dcgan")
    gan = written["runs"]["dcgan"]
    assert set(gan) == ({"fp32", "bf16", "bf16+channels-last"} if written["native_bf16"] else {"fp32"})
    assert all(r["fid"] > 0 and "test_loss" not in r for rs in gan.values() for r in rs)  # a GAN is judged by FID
    assert any("FID" in note for note in written["notes"])


@pytest.mark.slow  # three PixelCNN runs of two steps, each with its exact NLL: about 20 s
@needs_shared("mnist")
def test_precision_smoke_pixelcnn_steps(tmp_path, monkeypatch):
    """``--steps``: each run trains that many steps; its speed is per 100 steps; the PixelCNN sees binary pixels."""
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    out = tmp_path / "results"
    precision.main(["--data", "mnist", "--models", "pixelcnn", "--steps", "2", "--seeds", "1", "--limit", "128",
                    "--results-dir", str(out), "--readme", ""])
    written = json.loads((out / "precision-mnist-pixelcnn.json").read_text())
    runs = written["runs"]["pixelcnn"]
    assert set(runs) == ({"fp32", "bf16", "bf16+channels-last"} if written["native_bf16"] else {"fp32"})
    assert written["steps"] == 2 and written["epochs"] is None and "100 steps" in written["table"]["columns"][2]
    for variant, rs in runs.items():
        assert all(r["used"] == variant.split("+")[0] and r["s_per_100_steps"] > 0 and "s_per_epoch" not in r
                   and r["steps"] == 2 for r in rs)
        # binary pixels: at most 784 ln 2 = 543 nats at the start (grey levels would cost thousands)
        assert all(0 < r["test_loss"] < 560 for r in rs)


def test_time_to_elbo_counts_the_first_epoch_at_the_target():
    curve = [{"epoch": 1, "time_s": 2.0, "test_loss": 250.0}, {"epoch": 2, "time_s": 4.0, "test_loss": 244.0},
             {"epoch": 3, "time_s": 6.0, "test_loss": 243.0}]
    assert time_to_elbo.first_reaching(curve, 244.0)["epoch"] == 2  # at the target counts
    assert time_to_elbo.first_reaching(curve, 243.5)["time_s"] == 6.0
    assert time_to_elbo.first_reaching(curve, 242.0) is None


def test_time_to_elbo_recipe_is_a_command_genlab_accepts(tmp_path):
    from genlab.cli import build_parser  # the parser the genlab script uses

    argv = time_to_elbo.genlab_command("digits", tmp_path / "run", 3, lr=5e-3, beta1=0.85, beta2=0.95, epochs=5,
                                       precision="auto", batch_size=256)
    assert argv[:2] == ["-m", "genlab"]
    parsed, overrides = build_parser().parse_known_args(argv[2:])
    assert parsed.lr == 5e-3 and parsed.epochs == 5 and parsed.seed == 3 and parsed.no_figures
    assert parsed.batch_size == 256
    assert overrides == ["--train.betas=0.85,0.95", "--train.schedule=cosine", "--train.precision=auto"]


@pytest.mark.slow  # two whole processes: one peer epoch and one genlab epoch, about 20 s
@needs_shared("fashion-mnist")
def test_time_to_elbo_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_DATA", str(SHARED_DATA))
    out = tmp_path / "results"
    result = time_to_elbo.main(["--seeds", "1", "--peer-epochs", "1", "--epochs", "1", "--results-dir", str(out),
                                "--readme", ""])
    written = json.loads((out / "time_to_elbo-fashion-mnist.json").read_text())
    assert written["command"] == result["command"]
    (seed,) = written["per_seed"]
    assert len(seed["peer"]) == 1 and len(seed["genlab"]) == 1 and seed["peer"][0]["time_s"] > 0
    assert seed["target"] == seed["peer"][0]["test_loss"] and 200 < seed["target"] < 400
    mine = seed["genlab"][0]["test_loss"]
    assert (seed["reached_epoch"] == 1) == (mine <= seed["target"])  # one genlab epoch at lr 5e-3 may or may not
    assert written["recipe"]["used"] in ("fp32", "bf16")
