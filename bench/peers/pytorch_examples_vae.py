"""The VAE of pytorch/examples (``vae/main.py``), reproduced for measurement beside genlab.

It follows that file's training loop: 784-400-20 with ReLU, sigmoid outputs, ``F.binary_cross_entropy`` summed
plus the analytic KL, Adam 1e-3, batch 128, a shuffled ``DataLoader`` over a dataset that yields one sample at a
time converted from a PIL image (what ``torchvision.datasets.MNIST`` with ``transforms.ToTensor()`` does; written
out here because torchvision does not import beside this machine's torch). The reported losses are the example's:
the summed loss over the split divided by its number of images, i.e. the negative single-sample ELBO in nats.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset


class PILMnist(Dataset):
    """uint8 (N, 28, 28) images served one at a time as PIL images converted to (1, 28, 28) tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i], mode="L")
        t = torch.from_numpy(np.array(img, dtype=np.uint8)).float().div(255).unsqueeze(0)  # ToTensor
        return t, int(self.labels[i])


class ExampleVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


class ExampleRun:
    """Holds the example's model, optimizer and loaders; ``epoch()`` trains one epoch, ``test()`` scores.

    ``model`` (a constructor) and ``loss`` (``loss(recon_x, x, mu, logvar)``, summed over the batch) default to the
    example's own; ``peers/conv_vae_loop.py`` passes a conv VAE and its loss to the same loop."""

    def __init__(self, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 1,
                 batch_size: int = 128, model: Callable[[], nn.Module] = ExampleVAE,
                 loss: Callable[..., torch.Tensor] = loss_function):
        torch.manual_seed(seed)
        self.model = model()
        self.loss = loss
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.train_loader = DataLoader(PILMnist(*train), batch_size=batch_size, shuffle=True)
        self.test_loader = DataLoader(PILMnist(*test), batch_size=batch_size, shuffle=False)

    def epoch(self) -> tuple[float, float]:
        """One training epoch: (average train loss per image, seconds)."""
        self.model.train()
        start = time.perf_counter()
        train_loss = 0.0
        for data, _ in self.train_loader:
            self.optimizer.zero_grad()
            recon_batch, mu, logvar = self.model(data)
            loss = self.loss(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            self.optimizer.step()
        return train_loss / len(self.train_loader.dataset), time.perf_counter() - start

    @torch.no_grad()
    def test(self) -> float:
        self.model.eval()
        test_loss = 0.0
        for data, _ in self.test_loader:
            recon_batch, mu, logvar = self.model(data)
            test_loss += self.loss(recon_batch, data, mu, logvar).item()
        return test_loss / len(self.test_loader.dataset)


# --- the whole script, as `python main.py --epochs N` runs it (bench/whole_process.py times it) ---

def _read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip) as torchvision's MNIST reads it: uint8 images (N, 28, 28) or labels (N,)."""
    import gzip

    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_split(folder: str | os.PathLike, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of split ``kind`` (train, t10k) from the IDX .gz files in ``folder``."""
    return (_read_idx(os.path.join(folder, f"{kind}-images-idx3-ubyte.gz")),
            _read_idx(os.path.join(folder, f"{kind}-labels-idx1-ubyte.gz")))


def _save_image(images: torch.Tensor, path: str, nrow: int = 8, padding: int = 2) -> None:
    """torchvision's ``save_image``: a grid of (N, 1, H, W) images in [0, 1], ``nrow`` per row, ``padding``
    pixels between them, written as a PNG."""
    n, _, h, w = images.shape
    rows = -(-n // nrow)
    grid = torch.zeros(rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = images[i, 0]
    Image.fromarray(grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy(), mode="L").convert("RGB").save(path)


def script(argv: list[str] | None = None) -> None:
    """pytorch/examples ``vae/main.py``: train and test every epoch, printing the example's lines, and save the
    reconstructions of the first test batch and 64 samples from the prior as PNGs after each epoch."""
    import argparse

    ap = argparse.ArgumentParser(description="pytorch/examples vae/main.py, replicated")
    ap.add_argument("--data-dir", required=True, help="folder of the four IDX .gz files (MNIST or Fashion-MNIST)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log-interval", type=int, default=10)
    ap.add_argument("--results", default="results", help="where the PNGs go")
    args = ap.parse_args(argv)
    os.makedirs(args.results, exist_ok=True)

    run = ExampleRun(read_split(args.data_dir, "train"), read_split(args.data_dir, "t10k"), seed=args.seed,
                     batch_size=args.batch_size)
    model, optimizer = run.model, run.optimizer
    for epoch in range(1, args.epochs + 1):
        model.train()
        train_loss = 0.0
        for batch_idx, (data, _) in enumerate(run.train_loader):
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(run.train_loader.dataset)} "
                      f"({100.0 * batch_idx / len(run.train_loader):.0f}%)]\tLoss: {loss.item() / len(data):.6f}")
        print(f"====> Epoch: {epoch} Average loss: {train_loss / len(run.train_loader.dataset):.4f}")
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for i, (data, _) in enumerate(run.test_loader):
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
                if i == 0:
                    n = min(data.size(0), 8)
                    comparison = torch.cat([data[:n], recon_batch.view(-1, 1, 28, 28)[:n]])
                    _save_image(comparison, os.path.join(args.results, f"reconstruction_{epoch}.png"), nrow=n)
        print(f"====> Test set loss: {test_loss / len(run.test_loader.dataset):.4f}")
        with torch.no_grad():
            sample = model.decode(torch.randn(64, 20)).cpu()
            _save_image(sample.view(64, 1, 28, 28), os.path.join(args.results, f"sample_{epoch}.png"))


if __name__ == "__main__":
    script()
