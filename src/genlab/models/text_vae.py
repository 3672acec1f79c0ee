"""A VAE of fixed-length lines of characters (the "poem robot"): five-character couplets and the like.

Default (the CNN design of the Chinese VAE posts): embedding -> residual gated 1-D convolutions (half the channels
gate the other half through a sigmoid, Dauphin et al. 2017) -> global average pooling -> mean and log-variance;
decoder: dense to (length, channels) -> a residual gated convolution -> a softmax over the vocabulary at every
position, each position independent given z.

Option ``decoder=gru``: an autoregressive GRU decoder conditioned on z (initial state and every input), with KL
warm-up and word dropout (Bowman et al. 2016, "Generating Sentences from a Continuous Space"). Such a decoder can
model the lines without z; the KL then collapses to ~0, which ``genlab eval`` reports (``latent/kl_collapsed``).

Loss per example: the cross-entropy summed over the positions (nats per line) + KL(q(z|x) || N(0, I)) summed over
the latent dimensions, both averaged over the batch: summing the reconstruction keeps its scale comparable to
the KL (a per-position mean would let the KL swamp it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.spec import DataSpec
from genlab.data.text import format_poem, parse_line
from genlab.data.vocab import Vocabulary
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel
from genlab.nn.gaussian import kl_normal_std, kl_weight, reparameterize
from genlab.registry import MODELS

DECODERS = ("conv", "gru")


@dataclass
class TextVAEConfig:
    embed_dim: int = 64  # character embedding size
    channels: int = 64  # width of the residual stream of the gated convolutions
    kernel: int = 3  # convolution width (odd: the length is kept)
    encoder_layers: int = 2  # residual gated convolutions of the encoder
    latent_dim: int = 64  # size of z
    decoder: str = "conv"  # conv (independent positions given z) | gru (autoregressive, Bowman et al. 2016)
    decoder_layers: int = 1  # conv decoder: residual gated convolutions after the dense layer
    gru_hidden: int = 256  # gru decoder: hidden units
    beta: float = 1.0  # weight of the KL term; the reported ELBO always uses 1
    # optimizer steps over which the KL weight grows linearly from 0 to beta. Even the conv decoder needs it on the
    # Tang corpus: without it the KL fell to 0.1 nats within the first epoch (posterior collapse, unigram output)
    kl_warmup: int = 3000
    word_dropout: float = 0.0  # gru decoder: fraction of its input characters replaced by UNK while training
    temperature: float = 0.0  # default for sampling: 0 takes the argmax at each position, > 0 samples softmax(l/T)


def _check_config(cfg: TextVAEConfig, spec: DataSpec) -> None:
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"model.decoder must be one of {', '.join(DECODERS)}, not {cfg.decoder!r}")
    if min(cfg.embed_dim, cfg.channels, cfg.latent_dim, cfg.gru_hidden) < 1:
        raise ConfigError("model.embed_dim, channels, latent_dim and gru_hidden must be >= 1")
    if cfg.kernel < 1 or cfg.kernel % 2 == 0:
        raise ConfigError(f"model.kernel must be odd (the length is kept), got {cfg.kernel}")
    if cfg.encoder_layers < 0 or cfg.decoder_layers < 0:
        raise ConfigError("model.encoder_layers and model.decoder_layers must be >= 0")
    if not 0.0 <= cfg.word_dropout < 1.0:
        raise ConfigError(f"model.word_dropout must be in [0, 1), got {cfg.word_dropout}")
    if cfg.word_dropout > 0 and cfg.decoder != "gru":
        raise ConfigError("model.word_dropout applies to the gru decoder only (the conv decoder reads no characters)")
    if cfg.beta < 0 or cfg.kl_warmup < 0 or cfg.temperature < 0:
        raise ConfigError("model.beta, model.kl_warmup and model.temperature must be >= 0")


class GatedConv1d(nn.Module):
    """x + a * sigmoid(g), with [a, g] = conv(x) split along the channels: a residual gated 1-D convolution
    (the gated linear unit of Dauphin et al. 2017). (B, C, L) -> (B, C, L)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, 2 * channels, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.conv(x).chunk(2, dim=1)  # (B, C, L) each
        return x + a * torch.sigmoid(g)


@MODELS.register("text-vae")
class TextVAE(GenerativeModel):
    """VAE of fixed-length lines of characters (couplets): gated 1-D conv encoder, conv or GRU decoder."""

    Config: ClassVar[type] = TextVAEConfig
    data_kind: ClassVar[str] = "text"
    presets: ClassVar[dict[str, dict]] = {
        "conv": {"decoder": "conv"},
        "gru-bowman": {"decoder": "gru", "kl_warmup": 5000, "word_dropout": 0.25},
        # the first run to try: the Tang corpus (text, so not the image default mnist-5k) for 600 steps, half an epoch
        "quick": {"data.name": "poems", "data.min_count": 2, "train.max_steps": 600, "train.lr": 2e-3},
    }
    # measured with one torch thread on the 2-core AMD EPYC machine of the README's tables
    preset_notes: ClassVar[dict[str, str]] = {
        "default": "text only: give --data poems (or poems:PATH); on the Tang corpus (min count 2) 5 epochs took 19 "
                   "CPU minutes, the README's run",
        "quick": "the first run to try: 600 steps on the Tang corpus, 98 CPU s (a third of it reading the corpus): "
                 "couplet-shaped lines, argmax samples repeat characters, --temperature 0.7 varies them",
        "gru-bowman": "an autoregressive GRU decoder with KL warm-up and word dropout (Bowman et al. 2016): 2 epochs "
                      "of the Tang corpus took 10.8 CPU minutes",
    }

    def __init__(self, config: TextVAEConfig, spec: DataSpec):
        super().__init__(config, spec)
        _check_config(config, spec)
        self.vocab = Vocabulary(spec.vocab)
        self.length = spec.shape[0]
        self.latent_dim = config.latent_dim
        v, c = len(self.vocab), config.channels
        self.embed = nn.Embedding(v, config.embed_dim, padding_idx=Vocabulary.pad_id)
        self.embed_proj = nn.Conv1d(config.embed_dim, c, 1) if config.embed_dim != c else nn.Identity()
        self.encoder = nn.Sequential(*[GatedConv1d(c, config.kernel) for _ in range(config.encoder_layers)])
        self.to_posterior = nn.Linear(c, 2 * config.latent_dim)
        if config.decoder == "conv":
            self.from_latent = nn.Linear(config.latent_dim, self.length * c)
            self.decoder = nn.Sequential(*[GatedConv1d(c, config.kernel) for _ in range(config.decoder_layers)])
            self.to_logits = nn.Linear(c, v)  # per position; a matmul is far faster than a 1x1 conv here
        else:
            self.dec_embed = nn.Embedding(v, config.embed_dim, padding_idx=Vocabulary.pad_id)
            self.init_hidden = nn.Linear(config.latent_dim, config.gru_hidden)
            self.gru = nn.GRU(config.embed_dim + config.latent_dim, config.gru_hidden, batch_first=True)
            self.to_logits = nn.Linear(config.gru_hidden, v)

    # --- encoder ---

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) int64 ids -> posterior mean and log-variance, (B, latent_dim) each. PAD positions are left out
        of the average pooling."""
        h = self.embed_proj(self.embed(x).transpose(1, 2))  # (B, C, L)
        h = self.encoder(h)
        mask = (x != Vocabulary.pad_id).unsqueeze(1).to(h.dtype)  # (B, 1, L)
        pooled = (h * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B, C)
        mu, logvar = self.to_posterior(pooled).chunk(2, dim=-1)
        return mu, logvar

    # --- decoders ---

    def logits(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> (B, L, V) logits. The GRU decoder reads ``x`` (B, L) shifted right by one (teacher
        forcing, with word dropout while training)."""
        if self.config.decoder == "conv":
            h = self.from_latent(z).view(len(z), self.config.channels, self.length)  # (B, C, L)
            return self.to_logits(self.decoder(h).transpose(1, 2))  # (B, L, V)
        assert x is not None, "the gru decoder needs the characters it is conditioned on"
        prev = torch.cat([torch.full_like(x[:, :1], Vocabulary.bos_id), x[:, :-1]], dim=1)  # (B, L)
        if self.training and self.config.word_dropout > 0:
            drop = torch.rand(prev.shape, device=prev.device) < self.config.word_dropout
            drop[:, 0] = False  # keep BOS
            prev = prev.masked_fill(drop, Vocabulary.unk_id)
        inputs = torch.cat([self.dec_embed(prev), z.unsqueeze(1).expand(-1, self.length, -1)], dim=-1)
        h0 = torch.tanh(self.init_hidden(z)).unsqueeze(0)  # (1, B, H)
        out, _ = self.gru(inputs, h0)  # (B, L, H)
        return self.to_logits(out)

    def _pick(self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """(..., V) -> (...) ids: argmax (temperature 0) or a draw from softmax(logits / T). Never picks the
        BOS token, which is no character."""
        logits = logits.clone()
        logits[..., Vocabulary.bos_id] = float("-inf")
        if temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])

    @torch.no_grad()
    def decode_tokens(self, z: torch.Tensor, *, temperature: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, latent_dim) -> (B, L) int64 ids; the GRU decoder runs one position at a time."""
        if self.config.decoder == "conv":
            return self._pick(self.logits(z), temperature, generator)
        h = torch.tanh(self.init_hidden(z)).unsqueeze(0)  # (1, B, H)
        prev = torch.full((len(z), 1), Vocabulary.bos_id, dtype=torch.long, device=z.device)
        out = []
        for _ in range(self.length):
            step_in = torch.cat([self.dec_embed(prev), z.unsqueeze(1)], dim=-1)  # (B, 1, E + Z)
            o, h = self.gru(step_in, h)
            prev = self._pick(self.to_logits(o), temperature, generator)  # (B, 1)
            out.append(prev)
        return torch.cat(out, dim=1)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> (B, L) int64 ids, the most likely character at each position (greedy for gru)."""
        return self.decode_tokens(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids -> (B, L) ids decoded from each line's posterior mean."""
        mu, _ = self.encode(x)
        return self.decode_tokens(mu)

    # --- objective ---

    def _kl_weight(self, step: int | None) -> float:
        return kl_weight(self.config.beta, self.config.kl_warmup, step)

    def loss(self, batch: dict[str, torch.Tensor], step: int | None = None) -> dict[str, torch.Tensor]:
        x = batch["tokens"]  # (B, L)
        mu, logvar = self.encode(x)
        kl = kl_normal_std(mu, logvar).sum(-1)  # (B,)
        z = reparameterize(mu, logvar)
        logits = self.logits(z, x)  # (B, L, V)
        recon = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1),  # softmax on the last dim
                                reduction="none").view(x.shape).sum(-1)  # (B,) nats per line
        terms = {"loss": (recon + self._kl_weight(step) * kl).mean(), "recon": recon.mean(), "kl": kl.mean(),
                 "elbo": -(recon + kl).mean()}
        if not self.training:  # the argmax costs a twentieth of a training step; evaluation reports it
            with torch.no_grad():
                real = x != Vocabulary.pad_id
                terms["char_accuracy"] = ((logits.argmax(-1) == x) & real).sum() / real.sum().clamp(min=1)
        return terms

    # --- sampling and text ---

    @property
    def default_temperature(self) -> float:
        """The sampling temperature of the config (TemperatureSampler): 0 is the argmax."""
        return self.config.temperature

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float | None = None) -> torch.Tensor:
        """(n, L) int64 ids decoded from n draws of the prior (argmax, or softmax sampling at ``temperature``;
        None takes the config's)."""
        t = self.config.temperature if temperature is None else temperature
        if t < 0:
            raise ConfigError(f"temperature must be >= 0, got {t}")
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.decode_tokens(z, temperature=t, generator=generator)

    def tokens_to_text(self, tokens: torch.Tensor) -> list[str]:
        """(B, L) ids -> B strings without punctuation (unknown characters as UNK_CHAR)."""
        return [self.vocab.decode(row) for row in tokens.tolist()]

    def text_to_tokens(self, lines: Sequence[str]) -> torch.Tensor:
        """Lines with or without punctuation -> (B, L) ids; a line of a length this model does not take raises."""
        samples = [parse_line(line) for line in lines]
        for line, s in zip(lines, samples):
            if len(s) > self.length:
                raise ConfigError(f"{line!r} has {len(s)} characters; this model writes at most {self.length}")
        return self.vocab.encode_batch(samples, self.length).to(self.device)

    def unknown_characters(self, line: str) -> list[str]:
        """The characters of ``line`` that are not in this model's vocabulary (encoded as unknown)."""
        return self.vocab.unknown(parse_line(line))

    @torch.no_grad()
    def sample_text(self, n: int, *, generator: torch.Generator | None = None,
                    temperature: float | None = None) -> list[str]:
        """n samples formatted as poems, e.g. ``白日依山盡，黃河入海流。``."""
        return [format_poem(t) for t in self.tokens_to_text(self.sample(n, generator=generator,
                                                                            temperature=temperature))]

    @torch.no_grad()
    def interpolate_text(self, first: str, last: str, steps: int = 8) -> list[str]:
        """Decode ``steps`` codes evenly spaced on the line between the posterior means of two lines, the
        endpoints included; each formatted as a poem."""
        if steps < 2:
            raise ConfigError(f"steps must be >= 2 (the two endpoints), got {steps}")
        mu, _ = self.encode(self.text_to_tokens([first, last]))  # (2, Z)
        t = torch.linspace(0.0, 1.0, steps, device=mu.device).unsqueeze(1)  # (S, 1)
        z = (1 - t) * mu[0] + t * mu[1]  # (S, Z)
        return [format_poem(s) for s in self.tokens_to_text(self.decode_tokens(z))]
