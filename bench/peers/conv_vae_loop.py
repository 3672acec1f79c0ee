"""genlab's ``conv-small`` VAE written out in plain PyTorch and trained by the pytorch/examples loop, for
measurement beside genlab.

pytorch/examples has no convolutional VAE; this is the conv VAE a reader of its ``vae/main.py`` would write: the
same layers as genlab's ``conv-small`` preset (``genlab.nn.stacks.ConvEncoder``/``ConvDecoder`` with channels
(32, 64), one dense layer of 256 and a 2-D latent), created in the same order so that one seed gives both the same
initial weights, with the example's sigmoid outputs and summed ``F.binary_cross_entropy`` plus the analytic KL. It
is trained by ``ExampleRun`` of ``pytorch_examples_vae.py``, unchanged: Adam 1e-3, batch 128, a shuffled
``DataLoader`` over ``PILMnist`` (one PIL image at a time, as ``torchvision.datasets.MNIST`` + ``ToTensor()``).

    encoder  (1, 28, 28) -conv 4x4/2-> (32, 14, 14) -conv 4x4/2-> (64, 7, 7) -> 3136 -dense-> 256 -dense-> 2 x 2
    decoder  2 -dense-> 256 -dense-> 3136 -> (64, 7, 7) -deconv 4x4/2-> (32, 14, 14) -deconv 4x4/2-> (1, 28, 28)

ReLU after every layer but the two outputs. ``tests/test_bench_smoke.py`` checks the parameter shapes, the
multiply-adds and the outputs against genlab's model.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.peers.pytorch_examples_vae import ExampleRun


class ConvVAE(nn.Module):
    def __init__(self, latent_dim: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 4, stride=2, padding=1)  # 28 -> 14
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2, padding=1)  # 14 -> 7
        self.fc1 = nn.Linear(64 * 7 * 7, 256)
        self.fc2 = nn.Linear(256, 2 * latent_dim)  # mean and log-variance
        self.fc3 = nn.Linear(latent_dim, 256)
        self.fc4 = nn.Linear(256, 64 * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)  # 7 -> 14
        self.deconv2 = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)  # 14 -> 28

    def encode(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.relu(self.fc1(h.flatten(1)))
        mu, logvar = self.fc2(h).chunk(2, dim=1)
        return mu, logvar

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        h = F.relu(self.fc4(F.relu(self.fc3(z))))
        h = F.relu(self.deconv1(h.view(-1, 64, 7, 7)))
        return torch.sigmoid(self.deconv2(h))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def conv_example_run(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 1,
                     batch_size: int = 128) -> ExampleRun:
    """The pytorch/examples loop (``ExampleRun``) over ``ConvVAE`` and its loss."""
    return ExampleRun(train, test, seed=seed, batch_size=batch_size, model=ConvVAE, loss=loss_function)
