"""Variational autoencoder (Kingma & Welling 2014) with beta, KL warm-up, free bits and the importance-weighted
objective (Burda et al. 2016). Encoders and decoders: ``mlp``, ``conv`` and the ``keras-deconv`` preset."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.abilities import Illustrated, Illustration, LearnedPriorModel
from genlab.models.base import GenerativeModel
from genlab.models.vae_step import DenseStep, dense_layers
from genlab.nn.autoregressive import AutoregressiveBernoulli
from genlab.nn.gaussian import kl_normal, kl_normal_std, kl_weight, log_normal, reparameterize
from genlab.nn.likelihoods import Bernoulli, build_likelihood
from genlab.nn.priors import PRIORS, Mixture, VampPrior, build_prior, mixture_log_prob, mixture_sample
from genlab.nn.stacks import build_decoder, build_encoder
from genlab.registry import MODELS


@dataclass
class VAEConfig:
    arch: str = "mlp"  # mlp | conv | keras-deconv (the old Keras deconv example, layer for layer)
    latent_dim: int = 20  # size of z
    hidden: tuple[int, ...] = (400,)  # dense layer widths of the encoder (the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv arch: channels of the strided convs (each halves the size)
    activation: str = "relu"
    # auto | bernoulli (binary pixels) | gaussian | logistic (discretized, 8-bit) | palette (a softmax over the K
    # colours of palette-quantized data, --data.palette=K); auto: palette for palette-quantized data, else bernoulli
    likelihood: str = "auto"
    sigma: float = 1.0  # gaussian: the standard deviation of p(x|z) (MSE is the fixed-sigma case)
    learn_sigma: bool = False  # gaussian: learn one sigma per channel instead
    gaussian_mean: str = "sigmoid"  # gaussian: sigmoid (means in [0, 1]) | identity (linear-Gaussian, e.g. PPCA)
    beta: float = 1.0  # weight of the KL term (beta-VAE, Higgins et al. 2017); the reported ELBO always uses 1
    kl_warmup: int = 0  # optimizer steps over which the KL weight grows linearly from 0 to beta
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not penalised (Kingma et al. 2016)
    iwae_k: int = 1  # importance samples of the training objective; 1 is the ELBO, >1 the IWAE bound
    # bernoulli only: >0 adds an autoregressive head of this many MADE units (plus direct connections) on top of the
    # decoder, so pixel i also depends on pixels before it (nn/autoregressive.py); log p(x|z) stays exact, decoding
    # and sampling then run one pixel at a time
    ar_hidden: int = 0
    ar_direct: bool = True  # the head's direct pixel-to-pixel connections (D^2 weights); False keeps only MADE units
    # >0: pixel i's head sees only the ar_window pixels before it in raster order (56: about the two rows above), so
    # the shape of the whole image must come from z; 0: every earlier pixel
    ar_window: int = 0
    # p(z): normal (N(0, I), analytic KL) | mog (a learned mixture of prior_components diagonal Gaussians) | vamp
    # (the VampPrior: the encoder's posteriors of prior_components learned pseudo-inputs); the learned priors'
    # KL is estimated from the decoded z (nn/priors.py)
    latent_prior: str = "normal"
    prior_components: int = 500


def resolve_likelihood(name: str, spec: DataSpec) -> str:
    """The likelihood ``name`` names on ``spec``'s data: ``auto`` is the palette softmax for palette-quantized data
    (as the pixel models' ``output=auto``) and Bernoulli otherwise (the classic choice, also for grey pixels)."""
    if name == "auto":
        return "palette" if spec.palette else "bernoulli"
    return name


_DECODE_SEED = 0  # the uniforms of decode()'s chains with the autoregressive head


def _default_generator(device: torch.device) -> torch.Generator:
    """A generator seeded from torch's global RNG, for sampling calls that were given none."""
    return torch.Generator(device=device).manual_seed(int(torch.randint(0, 2 ** 62, ()).item()))


def _check_config(cfg: VAEConfig) -> None:
    if cfg.latent_dim < 1:
        raise ConfigError(f"model.latent_dim must be >= 1, got {cfg.latent_dim}")
    if cfg.iwae_k < 1:
        raise ConfigError(f"model.iwae_k must be >= 1, got {cfg.iwae_k}")
    if cfg.iwae_k > 1 and (cfg.beta != 1.0 or cfg.free_bits > 0 or cfg.kl_warmup > 0):
        raise ConfigError("model.iwae_k > 1 trains the importance-weighted bound itself; it does not combine with "
                          "beta, free_bits or kl_warmup (leave them at 1, 0, 0)")
    if cfg.gaussian_mean not in ("sigmoid", "identity"):
        raise ConfigError(f"model.gaussian_mean must be sigmoid or identity, not {cfg.gaussian_mean!r}")
    if cfg.ar_hidden < 0:
        raise ConfigError(f"model.ar_hidden must be >= 0, got {cfg.ar_hidden}")
    if cfg.ar_window < 0:
        raise ConfigError(f"model.ar_window must be >= 0 (0: the head sees every earlier pixel), got {cfg.ar_window}")
    if cfg.ar_window and not cfg.ar_hidden:
        raise ConfigError("model.ar_window limits the autoregressive head, which model.ar_hidden=0 leaves out: give "
                          "the head units (e.g. --model.ar_hidden=500) or leave ar_window at 0")
    if cfg.ar_hidden and cfg.likelihood not in ("auto", "bernoulli"):
        raise ConfigError("model.ar_hidden (the autoregressive decoder head) needs binary pixels: use "
                          "--model.likelihood=bernoulli with --data.binarize=dynamic (or static)")
    if cfg.latent_prior not in PRIORS:
        raise ConfigError(f"model.latent_prior must be one of {', '.join(PRIORS)}, not {cfg.latent_prior!r}")
    if cfg.latent_prior != "normal" and cfg.prior_components < 1:
        raise ConfigError(f"model.prior_components must be >= 1, got {cfg.prior_components}")
    if cfg.latent_prior != "normal" and cfg.free_bits > 0:
        raise ConfigError("model.free_bits needs the per-dimension KL of the normal prior; a learned prior "
                          f"({cfg.latent_prior}) has no such split: leave free_bits at 0")
    if cfg.beta < 0 or cfg.free_bits < 0 or cfg.kl_warmup < 0:
        raise ConfigError("model.beta, model.free_bits and model.kl_warmup must be >= 0")


def _full(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 when a bf16 (or fp16) autocast step computed it; fp32 and float64 as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


@MODELS.register("vae")
class VAE(GenerativeModel):
    """q(z|x) = N(mu(x), diag sigma^2(x)), p(z) = N(0, I) or a learned prior, p(x|z) from the chosen
    likelihood."""

    Config: ClassVar[type] = VAEConfig
    # bench/precision.py: the MLP 1.1-1.4x (bench/vae_mlp_epoch: 1.38x) and conv-small 1.27x faster in bf16 at test
    # losses within seed noise (keras-deconv 1.05x); the other presets were not measured
    bf16_pays: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mlp-784-400-20": {"arch": "mlp", "hidden": (400,), "latent_dim": 20},
        "keras-deconv": {"arch": "keras-deconv", "latent_dim": 2},
        "conv-small": {"arch": "conv", "channels": (32, 64), "hidden": (256,), "latent_dim": 2},
        # time to quality on dynamically binarized MNIST (bench/time_to_quality.py): the 784-400-20 VAE with an
        # autoregressive head of 500 MADE units, and a larger one; each trains for a wall-clock budget, with a
        # cosine schedule over that budget. The k=5000 bound they are judged by is an honest bound on log p(x)
        "mnist-10min": {"hidden": (400,), "latent_dim": 20, "ar_hidden": 500,
                        "data.name": "mnist", "data.binarize": "dynamic", "train.batch_size": 256,
                        "train.lr": 2e-3, "train.schedule": "cosine", "train.epochs": 100_000,
                        "train.time_limit": 600.0, "train.eval_every": 10},
        # mnist-1h: a wide head overfits (train ELBO 2 nats above test), which AdamW's weight decay holds back,
        # and a window of 112 earlier pixels (4 rows) more: the digit's shape must then come from z, and the k=5000
        # bound gained 0.48 nats over the same hour with every earlier pixel in view. With the window the head can
        # be wider: 4,000 units instead of 2,000 fit 361 epochs into the hour instead of 588, and gain 0.39 nats;
        # computed in blocks of the window (nn/autoregressive.py), 6,000 units fit 378 epochs (4,000 computed
        # densely: 361) and gain 0.36 nats more; bf16 where the CPU computes it natively fits about 1.8x the
        # epochs of fp32 (2,000 units: 583 against 324)
        "mnist-1h": {"hidden": (512, 512), "latent_dim": 50, "ar_hidden": 6000, "ar_window": 112,
                     "data.name": "mnist", "data.binarize": "dynamic", "train.batch_size": 512,
                     "train.optimizer": "adamw", "train.weight_decay": 0.05,
                     "train.lr": 2e-3, "train.schedule": "cosine", "train.epochs": 100_000,
                     "train.time_limit": 3600.0, "train.eval_every": 25, "train.precision": "auto"},
        # the README's Python quick-start: the defaults for 30 epochs instead of 10
        "quick": {"train.epochs": 30},
        # the lecture's Pokemon VAE: a 10-dim code to read (fix 8 dims, sweep 2) over 40x40 sprites in 167 colours,
        # decoded by the palette softmax (likelihood auto), trained as the pixel models' pokemon presets
        "pokemon": {"arch": "conv", "channels": (32, 64, 128), "hidden": (256,), "latent_dim": 10,
                    "data.name": "pokemon", "data.palette": 167, "data.flip": True, "train.batch_size": 32,
                    "train.lr": 1e-3, "train.schedule": "cosine", "train.epochs": 100, "train.eval_every": 10,
                    "train.threads": 1},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables unless they say otherwise
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "784-400-20 MLP, 10 epochs: 8 CPU s on mnist-5k; blurry but readable digits of all ten classes "
                   "(precision 0.21, FID 34)",
        "quick": "the first run to try: the defaults for 30 epochs, 15 CPU s on mnist-5k; clear digits of all ten "
                 "classes (precision 0.61, FID 18.8)",
        "mlp-784-400-20": "the classic MLP VAE of pytorch/examples: after 10 epochs of grey MNIST a test loss of "
                          "105.5 nats (4 seeds), as theirs (105.6)",
        "keras-deconv": "the old Keras deconvolution example, layer for layer (2-D latent)",
        "conv-small": "a small conv VAE with a 2-D latent (make demo's net): 21 s an epoch on the 60,000 MNIST "
                      "digits, 2 threads",
        "mnist-10min": "10 minutes of training on binarized MNIST: 84.9 nats (k=5000) with 2 threads, 85.4 on one "
                       "core; the k=5000 evaluation takes 11 (2 threads) to 21 minutes more",
        "mnist-1h": "one hour of training on binarized MNIST, 2 threads: 81.71 nats (k=5000) in bf16 on a CPU "
                    "with AVX512-BF16; the evaluation takes about 28 minutes more",
        "pokemon": "a 10-dim code for the 697 training Pokemon sprites, 40x40 in 167 colours, 100 epochs on one "
                   "thread, 837 CPU s: test NLL <= 3.90 bits per pixel (k=1000; i.i.d. colours: 4.83), all 10 "
                   "dimensions active; blurry sprite-shaped means whose dimensions read as body colour and outline",
    }

    def __init__(self, config: VAEConfig, spec: DataSpec, cond_dim: int = 0):
        super().__init__(config, spec)
        _check_config(config)
        self.latent_dim = config.latent_dim
        c = spec.shape[0]
        palette = torch.tensor(spec.palette, dtype=torch.float32) if spec.palette else None
        kind = resolve_likelihood(config.likelihood, spec)
        if config.ar_hidden and kind != "bernoulli":
            raise ConfigError("model.ar_hidden (the autoregressive decoder head) needs binary pixels, not a palette: "
                              "leave out --data.palette and add --data.binarize=dynamic")
        self.likelihood = build_likelihood(kind, c, sigma=config.sigma, learn_sigma=config.learn_sigma,
                                           squash=config.gaussian_mean == "sigmoid", levels=spec.levels,
                                           palette=palette)
        out_ch = self.likelihood.output_channels(c)
        self.encoder = build_encoder(config.arch, spec.shape, 2 * config.latent_dim, hidden=config.hidden,
                                     channels=config.channels, act=config.activation, cond_dim=cond_dim)
        self.decoder = build_decoder(config.arch, config.latent_dim + cond_dim, spec.shape, out_ch,
                                     hidden=config.hidden, channels=config.channels, act=config.activation)
        self.ar = (AutoregressiveBernoulli(math.prod(spec.shape), config.ar_hidden, config.latent_dim + cond_dim,
                                           direct=config.ar_direct, window=config.ar_window)
                   if config.ar_hidden else None)
        self.prior = build_prior(config.latent_prior, config.prior_components, config.latent_dim, spec.shape)
        # the hand-differentiated step: True until the first train_step decides, then the step or False (autograd)
        self._hand: DenseStep | bool = True

    # --- conditioning hooks (the conditional family overrides these two) ---

    def _cond(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A condition vector (B, K) fed to encoder and decoder, or None."""
        return None

    def _prior_mean(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The mean (B, latent_dim) of a unit-variance Gaussian prior, or None for N(0, I)."""
        return None

    # --- the model ---

    def _posterior(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # fp32 whatever the products ran in (train.precision=bf16): the KL and the sampling need its precision
        mu, logvar = _full(self.encoder(x, cond)).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar

    def _code(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The decoder's input: z, with the condition appended; z may carry leading sample dims (K, B, L)."""
        if cond is None:
            return z
        return torch.cat([z, cond.expand(*z.shape[:-1], cond.shape[-1])], dim=-1)

    def _decoder_params(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(self._code(z, cond))

    def _log_px(self, z: torch.Tensor, cond: torch.Tensor | None, x: torch.Tensor,
                pixels: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """log p(x | z) for codes (..., B, L) and images (B, C, H, W): shape (..., B). ``pixels``: the head's
        ``pixel_part`` of x, when the caller scores many codes of the same images."""
        code = self._code(z, cond)
        params = _full(self.decoder(code))  # the likelihood in fp32 (or float64), as _posterior's terms
        if self.ar is None:
            return self.likelihood.log_prob(params, x)
        return self.ar.log_prob(params.flatten(-3), code, x.flatten(1), pixels)

    def _mean_images(self, z: torch.Tensor, cond: torch.Tensor | None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, L) codes -> (B, C, H, W) images in [0, 1]: the likelihood's mean; with the autoregressive head,
        p(x_i = 1 | x_<i, z) along a chain drawn with ``generator``. Without one, every code's chain uses the same
        fixed uniforms (common random numbers), so decoding is deterministic and nearby codes decode alike."""
        code = self._code(z, cond)
        params = _full(self.decoder(code))  # the likelihood in fp32 (or float64), as _posterior's terms
        if self.ar is None:
            return self.likelihood.mean(params)
        common = generator is None
        if common:
            generator = torch.Generator(device=params.device).manual_seed(_DECODE_SEED)
        _, probs = self.ar.chain(params.flatten(1), code, generator=generator, common_noise=common)
        return probs.view_as(params)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> posterior mean and log-variance, (B, L) each."""
        return self._posterior(x, cond)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) -> (B, C, H, W) mean images in [0, 1] (with the autoregressive head: along a chain drawn with
        the same fixed noise for every code)."""
        return self._mean_images(z, cond)

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the posterior mean of each image."""
        mu, _ = self._posterior(x, cond)
        return self.decode(mu, cond)

    def _kl_weight(self, step: int | None) -> float:
        return kl_weight(self.config.beta, self.config.kl_warmup, step)

    def _mixture(self) -> Mixture | None:
        """The learned prior's components (None for N(0, I)); the VampPrior encodes its pseudo-inputs here."""
        if self.prior is None:
            return None
        return self.prior.mixture(lambda u: self._posterior(u, None))

    # --- the optional abilities: a learned prior (mog, vamp) and the VampPrior's pseudo-inputs as a figure ---

    def offers(self, ability: type) -> bool:
        if ability is LearnedPriorModel:
            return self.prior is not None
        if ability is Illustrated:
            return isinstance(self.prior, VampPrior)
        return super().offers(ability)

    def prior_mixture(self) -> Mixture:
        """The learned prior's components (LearnedPriorModel)."""
        mix = self._mixture()
        if mix is None:
            raise ValueError("this VAE's prior is N(0, I), not a mixture")
        return mix

    @torch.no_grad()
    def illustrations(self) -> list[Illustration]:
        """The VampPrior's learned pseudo-inputs (up to 64), the images whose posteriors make p(z)."""
        if not isinstance(self.prior, VampPrior):
            return []
        pseudo = self.prior.pseudo_inputs()
        return [Illustration(
            "pseudo_inputs", f"VampPrior: {min(64, len(pseudo))} of {len(pseudo)} pseudo-inputs",
            "The VampPrior's learned pseudo-inputs: p(z) is the mixture of the encoder's posteriors of these images.",
            images=pseudo[:64].cpu())]

    def _log_pz(self, z: torch.Tensor, prior_mu: torch.Tensor | None, mix: Mixture | None) -> torch.Tensor:
        """log p(z) for codes (..., B, L): shape (..., B)."""
        if mix is not None:
            return mixture_log_prob(z, mix)
        return log_normal(z, 0.0 if prior_mu is None else prior_mu).sum(-1)

    @staticmethod
    def _kl_dims(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | None) -> torch.Tensor:
        """KL(q(z|x) || N(prior_mu or 0, I)) per dimension, (B, L)."""
        return kl_normal_std(mu, logvar) if prior_mu is None else kl_normal(mu, logvar, prior_mu)

    # what the hand-differentiated step (vae_step.py) computes in place of these; a subclass that overrides one (or
    # a test that patches one) trains through autograd
    _HAND_STEP_REPLACES: ClassVar[tuple[str, ...]] = ("loss", "_posterior", "_log_px", "_code", "_decoder_params",
                                                      "_kl_dims", "_kl_weight", "_mixture", "_log_pz")
    hand_step: bool = True  # False: every step through autograd (the tests and bench/vae_mlp_epoch compare both)

    def _dense_step(self) -> DenseStep | None:
        """The hand-differentiated step where this is the dense ReLU VAE with Bernoulli pixels, N(0, I) and the
        plain ELBO, and its layers are all its parameters; else None."""
        cfg = self.config
        if (cfg.arch != "mlp" or cfg.activation != "relu" or self.ar is not None or cfg.iwae_k != 1
                or cfg.free_bits > 0 or self.prior is not None or type(self.likelihood) is not Bernoulli
                or any(getattr(type(self), m) is not f for m, f in _DERIVED_FROM.items())):
            return None
        encoder, decoder = dense_layers(self.encoder.head), dense_layers(self.decoder.net)
        if encoder is None or decoder is None:
            return None
        step = DenseStep(encoder, decoder, cfg.latent_dim, self.likelihood.log_prob)
        return step if step.covers(list(self.parameters())) else None

    def train_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer],
                   step: int) -> dict[str, torch.Tensor]:
        """One step of Adam (or the configured optimizer) on ``loss``; for the dense Bernoulli VAE with its
        gradient derived by hand (vae_step.py: the same terms and gradients, fewer kernels, no graph)."""
        if self._hand is True:
            self._hand = self._dense_step() or False
        hand, x = self._hand, batch["x"]
        if not (self.hand_step and hand and x.dim() == 4 and self._prior_mean(batch) is None):
            return super().train_step(batch, optimizers, step)
        device, own = x.device.type, hand.params[0].dtype
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else own
        # the step computes in the weights' own precision, or in bf16 for fp32 weights
        if not (dtype == own or (dtype == torch.bfloat16 and own == torch.float32)) or not all(
                p.requires_grad for p in hand.params):
            return super().train_step(batch, optimizers, step)
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, enabled=False):
            terms = hand(x, self._cond(batch), self._kl_weight(step), dtype)
        self.optimizer_step(opt)
        return terms

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        cond, prior_mu = self._cond(batch), self._prior_mean(batch)
        mu, logvar = self._posterior(x, cond)
        mix = self._mixture()
        cfg = self.config
        if cfg.iwae_k == 1:
            z = reparameterize(mu, logvar)
            recon = -self._log_px(z, cond, x)  # (B,)
            if mix is not None:  # no closed form: log q(z|x) - log p(z) at the decoded z, unbiased
                kl = log_normal(z, mu, logvar).sum(-1) - mixture_log_prob(z, mix)  # (B,)
                kl_term = kl.mean()
            else:
                kl_dims = self._kl_dims(mu, logvar, prior_mu)  # (B, L), closed form
                kl = kl_dims.sum(-1)  # (B,)
                if cfg.free_bits > 0:  # KL of each dimension, averaged over the batch, is floored at free_bits
                    kl_term = kl_dims.mean(0).clamp(min=cfg.free_bits).sum()
                else:
                    kl_term = kl.mean()
            loss = recon.mean() + self._kl_weight(step) * kl_term
            elbo = -(recon + kl)
            return {"loss": loss, "recon": recon.mean(), "kl": kl.mean(), "elbo": elbo.mean()}
        log_w, recon0, kl0 = self._log_weights(x, cond, prior_mu, mu, logvar, cfg.iwae_k, mix)
        iwae = torch.logsumexp(log_w, dim=0) - math.log(cfg.iwae_k)  # (B,)
        if mix is None:
            kl0 = self._kl_dims(mu, logvar, prior_mu).sum(-1)
        return {"loss": -iwae.mean(), "iwae": iwae.mean(), "recon": recon0.mean(), "kl": kl0.mean(),
                "elbo": (-(recon0 + kl0)).mean()}

    def _log_weights(self, x: torch.Tensor, cond: torch.Tensor | None, prior_mu: torch.Tensor | None,
                     mu: torch.Tensor, logvar: torch.Tensor, k: int, mix: Mixture | None,
                     pixels: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k, B) log p(x|z) + log p(z) - log q(z|x) for z ~ q; the reconstruction NLL and the KL estimate
        log q(z|x) - log p(z) of the first draw, (B,) each."""
        eps = torch.randn(k, *mu.shape, dtype=mu.dtype, device=mu.device)  # (k, B, L)
        z = reparameterize(mu, logvar, eps)
        log_px = self._log_px(z, cond, x, pixels)  # (k, B)
        log_pz = self._log_pz(z, prior_mu, mix)
        log_qz = log_normal(z, mu, logvar).sum(-1)
        return log_px + log_pz - log_qz, -log_px[0], log_qz[0] - log_pz[0]

    @torch.no_grad()
    def log_importance_weights(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """(k, B) importance log-weights with q(z|x) as the proposal (LikelihoodModel)."""
        return self.importance_sampler(batch)(k)

    @torch.no_grad()
    def importance_sampler(self, batch: dict[str, torch.Tensor]) -> Callable[[int], torch.Tensor]:
        """``log_importance_weights`` for one batch drawn in chunks: q(z|x), the learned prior's components and the
        head's pixel part are computed once, and each call ``draw(k)`` gives the next (k, B) log-weights (the
        same numbers as ``log_importance_weights(batch, k)`` calls in a row, from the same random draws)."""
        x = batch["x"]
        cond, prior_mu = self._cond(batch), self._prior_mean(batch)
        mu, logvar = self._posterior(x, cond)
        mix = self._mixture()
        pixels = None if self.ar is None else self.ar.pixel_part(x.flatten(1))

        def draw(k: int) -> torch.Tensor:
            return self._log_weights(x, cond, prior_mu, mu, logvar, k, mix, pixels)[0]
        return draw

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode n draws from the prior: (n, C, H, W) mean images in [0, 1] (with the autoregressive head, the
        pixel probabilities along a chain drawn from ``generator``)."""
        mix = self._mixture()
        if mix is None:
            z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        else:
            z = mixture_sample(n, mix, generator=generator)
        if self.ar is not None:
            return self._mean_images(z, None, generator=generator or _default_generator(self.device))
        return self.decode(z)


# the methods the hand step was derived from, as this module defines them
_DERIVED_FROM = {name: getattr(VAE, name) for name in VAE._HAND_STEP_REPLACES}
