"""genlab's 784-400-20 VAE against the pytorch/examples VAE on grey MNIST, epoch by epoch, alternating.

Both train with the same recipe (BCE on grey pixels, Adam 1e-3, batch 128); each epoch is timed for both in
the same run, and the test loss (the negative single-sample ELBO, nats per image) is recorded after every epoch.

    GENLAB_DATA=../shared/data .venv/bin/python bench/vae_mnist_elbo.py --epochs 10
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.pytorch_examples_vae import ExampleRun  # noqa: E402

import genlab  # noqa: E402
from genlab.api import build_config  # noqa: E402
from genlab.registry import get_family  # noqa: E402
from genlab.train.trainer import Trainer, evaluate_terms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, help="train on the first N images only (CI smoke)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vae_mnist_elbo.json"))
    args = ap.parse_args()

    data = genlab.load_dataset(args.data)
    if args.limit:
        data.train_x, data.train_y = data.train_x[:args.limit], data.train_y[:args.limit]
    to_u8 = lambda x: (x[:, 0] * 255).round().to(torch.uint8).numpy()  # noqa: E731
    peer = ExampleRun((to_u8(data.train_x), data.train_y.numpy()), (to_u8(data.test_x), data.test_y.numpy()),
                      seed=args.seed)

    cfg = build_config("vae", args.data, preset="mlp-784-400-20", seed=args.seed, progress=False)
    torch.manual_seed(args.seed)
    model = get_family("vae")(cfg.model_config, data.spec)
    trainer = Trainer(model, data, cfg.train)
    rows = []
    for epoch in range(1, args.epochs + 1):
        trainer.cfg.epochs = epoch
        start = time.perf_counter()
        trainer.fit()
        g_time = time.perf_counter() - start - 0.0
        g_test = evaluate_terms(model, data, "test")
        p_train, p_time = peer.epoch()
        p_test = peer.test()
        rows.append({"epoch": epoch, "genlab_s": g_time, "peer_s": p_time, "speedup": p_time / g_time,
                     "genlab_test_loss": -g_test["elbo"], "peer_test_loss": p_test})
        print(f"epoch {epoch:2d}  genlab {g_time:5.2f} s  test {-g_test['elbo']:.2f}  |  pytorch/examples "
              f"{p_time:5.2f} s  test {p_test:.2f}  |  speed-up {p_time / g_time:.2f}x", flush=True)
    result = {"benchmark": "vae_mnist_elbo", "data": args.data, "train_images": len(data.train_x),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
              "epochs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
