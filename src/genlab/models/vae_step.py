"""The dense VAE's training step, differentiated by hand.

For the VAE of pytorch/examples and its kin -- dense ReLU layers, a diagonal Gaussian posterior, the N(0, I) prior,
Bernoulli pixels, the single-sample ELBO -- the gradient is a handful of matrix products. At the batch of 128 that
such a model trains with on a CPU, the products are half to two thirds of a step (bench/vae_mlp_epoch.py's
profile), and autograd adds to the rest: a graph recorded and walked every step, a fresh tensor for every
intermediate, and under bf16 autocast a cast of every weight on the way in and of every gradient on the way out.
``DenseStep`` computes the same loss terms and writes the same gradients into each parameter's ``.grad`` with no
graph, under three quarters of autograd's kernels and fewer than half of its casts (a bf16 step of the 784-400-20 VAE,
Adam's included; tests/test_vae_step.py counts them): the products in the compute precision (bf16 under
autocast, else the weights' own), all the weights cast in one operation and their gradients back in another; the
ReLU masks from the activations; the loss's nonlinear parts (sigmoid, the Bernoulli log-likelihood, the
posterior's exp) in fp32, as autocast runs them. ``tests/test_vae_step.py`` holds its terms and gradients to
autograd's in float64, fp32 and under bf16 autocast; ``bench/vae_mlp_epoch.py`` measures both.

The derivation, for a batch of B images x with decoder logits l, posterior mean mu and log-variance v, noise eps and
z = mu + exp(v/2) eps, and the loss (1/B) sum_b [BCE(l_b, x_b) + w KL_b]:

    dL/dl  = (sigmoid(l) - x) / B
    dL/dmu = dL/dz + w mu / B
    dL/dv  = dL/dz * eps * exp(v/2) / 2 + w (exp(v) - 1) / (2B)

and through each dense layer y = a W^T + b: dW = dy^T a, db = sum_b dy, da = dy W, masked where the ReLU was off.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from genlab.nn.gaussian import kl_normal_std

__all__ = ["DenseStep", "dense_layers"]


def dense_layers(net: nn.Sequential) -> list[nn.Linear] | None:
    """The Linear layers of ``net`` when it alternates Linear and ReLU and ends with a Linear (genlab's ``mlp``
    with ReLU), else None."""
    layers = list(net)
    linears = layers[0::2]
    if not linears or not all(type(m) is nn.Linear for m in linears):
        return None
    if not all(type(m) is nn.ReLU for m in layers[1::2]) or len(layers) != 2 * len(linears) - 1:
        return None
    return linears  # type: ignore[return-value]


def _relu_grad(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU whose output was ``out``: zero where it was off (autograd's own kernel)."""
    return torch.ops.aten.threshold_backward(grad, out, 0)


class DenseStep:
    """Loss terms and gradients of the dense Bernoulli VAE with a N(0, I) prior, for an ``encoder`` (image [and a
    condition vector] -> 2 x ``latent_dim``: mean and log-variance) and a ``decoder`` (code [and condition] -> pixel
    logits), each a list of Linear layers with ReLU between them; ``log_px`` is the Bernoulli likelihood's
    ``log_prob`` (logits and images (B, C, H, W) -> (B,)), which the reported terms use as ``VAE.loss`` does."""

    def __init__(self, encoder: list[nn.Linear], decoder: list[nn.Linear], latent_dim: int,
                 log_px: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.encoder, self.decoder, self.latent_dim, self.log_px = encoder, decoder, latent_dim, log_px
        self.params = [p for layer in (*encoder, *decoder) for p in (layer.weight, layer.bias)]
        self._low: list[torch.Tensor] = []  # the weights and biases in the compute precision, when it is lower
        self._grads: list[torch.Tensor] = []  # the weights' gradient buffers, in their own precision

    def covers(self, params: list[torch.Tensor]) -> bool:
        """Whether ``params`` (a model's parameters) are exactly the layers'."""
        return {id(p) for p in params} == {id(p) for p in self.params}

    def _weights(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """The weights and biases in ``dtype``: the parameters themselves, or this step's copies cast in one go."""
        if dtype == self.params[0].dtype:
            return self.params  # (read under no_grad: no graph)
        if not self._low or self._low[0].dtype != dtype or self._low[0].device != self.params[0].device:
            self._low = [torch.empty_like(p, dtype=dtype) for p in self.params]
        torch._foreach_copy_(self._low, self.params)  # (under no_grad: no graph)
        return self._low

    def _grad_buffers(self) -> list[torch.Tensor]:
        """One buffer per weight matrix (not bias) for its gradient, reused from step to step."""
        weights = self.params[0::2]
        if len(self._grads) != len(weights) or any(g.shape != w.shape or g.dtype != w.dtype or g.device != w.device
                                                   for g, w in zip(self._grads, weights)):
            self._grads = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
        return self._grads

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, cond: torch.Tensor | None, kl_weight: float,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The terms of ``VAE.loss`` for images ``x`` (B, C, H, W) (and a condition (B, K)), their gradient written
        into the parameters' ``.grad``; the products in ``dtype``. Draws the posterior noise as ``VAE.loss`` does
        (one ``randn_like`` of the mean)."""
        n_enc, L = len(self.encoder), self.latent_dim
        B = x.shape[0]
        low = dtype != self.params[0].dtype
        w = self._weights(dtype)
        enc_w, dec_w = w[: 2 * n_enc], w[2 * n_enc:]
        target = x.reshape(B, -1)
        if target.dtype != self.params[0].dtype:
            target = target.to(self.params[0].dtype)
        c = None if cond is None else cond.to(dtype)

        # forward: the encoder, keeping each layer's input (its ReLU output) for the backward pass
        h = target.to(dtype) if low else target
        if c is not None:
            h = torch.cat([h, c], dim=1)
        enc_in = []
        for i in range(n_enc):
            enc_in.append(h)
            h = torch.addmm(enc_w[2 * i + 1], h, enc_w[2 * i].t())
            if i < n_enc - 1:
                h.relu_()
        out = h.float() if low else h
        mu, logvar = out[:, :L], out[:, L:]
        eps = torch.randn_like(mu)
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps
        h = z.to(dtype) if low else z
        if c is not None:
            h = torch.cat([h, c], dim=1)
        dec_in = []
        for i in range(len(self.decoder)):
            dec_in.append(h)
            h = torch.addmm(dec_w[2 * i + 1], h, dec_w[2 * i].t())
            if i < len(self.decoder) - 1:
                h.relu_()
        logits = h.float() if low else h

        # the terms, as VAE.loss reports them (batch means)
        var = torch.exp(logvar)  # for the KL and, below, its gradient
        kl = kl_normal_std(mu, logvar, var).sum() / B
        recon = -self.log_px(logits.view(x.shape), target.view(x.shape)).mean()
        loss = recon + kl_weight * kl

        # backward
        grads = [torch.empty(0)] * len(self.params)
        g_w = self._grad_buffers()
        inv = 1.0 / B
        g = torch.sigmoid(logits).sub_(target).mul_(inv)  # dL/dlogits
        g_code = self._back(self.decoder, dec_w, dec_in, g, low, grads, g_w, offset=2 * n_enc, input_grad=True)
        assert g_code is not None
        g_z = g_code[:, :L].float() if low else g_code[:, :L]  # dL/dz
        g_out = torch.empty_like(out)
        torch.mul(g_z, eps, out=g_out[:, L:]).mul_(std).mul_(0.5).add_(var, alpha=0.5 * kl_weight * inv)
        g_out[:, L:].sub_(0.5 * kl_weight * inv)
        torch.add(g_z, mu, alpha=kl_weight * inv, out=g_out[:, :L])
        self._back(self.encoder, enc_w, enc_in, g_out, low, grads, g_w, offset=0, input_grad=False)
        if low:  # the weights' gradients back to their own precision, in one go
            torch._foreach_copy_(g_w, grads[0::2])
        for i, p in enumerate(self.params):
            p.grad = g_w[i // 2] if i % 2 == 0 else grads[i]
        return {"loss": loss, "recon": recon, "kl": kl, "elbo": -(recon + kl)}

    @staticmethod
    def _back(layers: list[nn.Linear], w: list[torch.Tensor], inputs: list[torch.Tensor], g: torch.Tensor,
              low: bool, grads: list[torch.Tensor], g_w: list[torch.Tensor], offset: int,
              input_grad: bool) -> torch.Tensor | None:
        """Back through ``layers`` from ``g`` = dL/d(output): each weight's and bias's gradient into ``grads`` (at
        ``offset``; the weights' straight into ``g_w`` when no cast follows); the gradient of the first layer's
        input returned (in the compute precision) if ``input_grad``."""
        g_low = g.to(w[0].dtype) if low else g
        for i in reversed(range(len(layers))):
            a = inputs[i]
            k = offset + 2 * i
            if low:
                grads[k] = torch.mm(g_low.t(), a)
            else:
                grads[k] = torch.mm(g_low.t(), a, out=g_w[k // 2])
            # the bias's gradient summed in the weights' precision (autograd under autocast sums it in bf16, then
            # casts it back)
            grads[k + 1] = g.sum(0) if g is not g_low else g_low.sum(0, dtype=g_w[k // 2].dtype)
            if i == 0 and not input_grad:
                return None
            g_low = torch.mm(g_low, w[2 * i])
            if i > 0:
                g_low = _relu_grad(g_low, a)
            g = g_low
        return g_low
