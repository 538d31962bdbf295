"""The Gaussian-posterior VAE: the one place where networks meet probability."""

from __future__ import annotations

import torch
from torch import nn

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.gated import GatedMLPDecoder, GatedMLPEncoder
from vaekit.nets.mlp import MLPDecoder, MLPEncoder
from vaekit.nets.residual import ResidualDecoder, ResidualEncoder
from vaekit.objectives import IWTerms, Terms, estimate
from vaekit.probability.flows import IAFFlow
from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.likelihoods import make_likelihood
from vaekit.probability.priors import VampPrior, make_prior


def full_precision(params: torch.Tensor) -> torch.Tensor:
    """Network outputs as float32 when autocast made them bfloat16 or float16.

    The probability layer sums hundreds of per-pixel terms; in bfloat16 (8 bits of mantissa) a
    sum near 200 nats would be off by about a nat, so it always sees float32 (or float64).
    """
    return params.float() if params.dtype in (torch.bfloat16, torch.float16) else params


class VAE(nn.Module):
    """Encoder -> q(z|x), prior p(z), decoder -> p(x|z); see Kingma & Welling (2014)."""

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        prior: nn.Module,
        likelihood: nn.Module,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        flow: IAFFlow | None = None,
    ) -> None:
        super().__init__()
        self.flow = flow  # an IAF on top of the Gaussian q0(z|x), or None
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The Gaussian posterior q(z|x) for a batch of images in [0, 1] (with an IAF posterior,
        its base q0(z0|x): what reconstructions, active units and per-dim KL read)."""
        return self.encode_with_context(x)[0]

    def encode_with_context(self, x: torch.Tensor) -> tuple[DiagonalGaussian, torch.Tensor | None]:
        """q0(z|x) and, with an IAF posterior, the context h [B, H] the encoder gives the flow."""
        out = full_precision(self.encoder(x))
        if self.flow is None:
            return DiagonalGaussian.from_params(out), None
        params, h = out.split([2 * self.latent_dim, out.shape[-1] - 2 * self.latent_dim], -1)
        return DiagonalGaussian.from_params(params), h

    def through_flow(
        self, q0: DiagonalGaussian, h: torch.Tensor | None, z0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A posterior sample and log q(z|x) per latent dim [..., B, D] from a draw z0 ~ q0:
        z0 itself without a flow; else z_T and log q0(z0|x) - log|det dz_T/dz0| per dim."""
        if self.flow is None:
            return z0, q0.log_prob_per_dim(z0)
        z, log_det = self.flow.transform(z0, h)
        return z, q0.log_prob_per_dim(z0) - log_det

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for latents ``z`` ([..., D] -> [..., C*P, H, W])."""
        return full_precision(self.decoder(z))

    def elbo(
        self, x: torch.Tensor, objective: ObjectiveConfig | str = "analytic", per_dim: bool = True
    ) -> Terms | IWTerms:
        """Per-example loss terms by the estimator of ``objective`` (a config, or a bare
        estimator name with default settings): see :func:`vaekit.objectives.estimate`."""
        return estimate(self, x, objective, per_dim)

    @torch.no_grad()
    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean images of p(x|z) for ``n`` prior draws z (temperature scales the prior std)."""
        z = self.prior.sample(n, generator=generator, temperature=temperature)
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Mean images of p(x|z) for given latents, in [0, 1]."""
        return self.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) at the posterior's centre: z = E[q(z|x)], or the flow of q0's mean."""
        q0, h = self.encode_with_context(x)
        return self.decode_mean(self.through_flow(q0, h, q0.mean)[0])


NETS = {
    "mlp": (MLPEncoder, MLPDecoder, "hidden"),
    "gated_mlp": (GatedMLPEncoder, GatedMLPDecoder, "hidden"),
    "conv": (ConvEncoder, ConvDecoder, "channels"),
    "resnet_vae": (ResidualEncoder, ResidualDecoder, "channels"),
}


def likelihood_of(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """The likelihood p(x|.) a model config names, for images of ``image_shape``."""
    return make_likelihood(
        cfg.likelihood,
        image_shape=tuple(image_shape),
        gaussian_scale=cfg.gaussian_scale,
        learned_scale=cfg.learned_scale,
        pixel_autoregression=cfg.pixel_autoregression,
    )


def decoder_sizes(cfg: ModelConfig) -> list[int]:
    """The decoder's widths or channels, from the latent outward: an MLP's are
    ``decoder_hidden`` or the encoder's reversed; a conv decoder takes ``channels`` as is."""
    if cfg.arch in ("mlp", "gated_mlp"):
        return list(cfg.decoder_hidden) or list(cfg.hidden)[::-1]
    return list(getattr(cfg, NETS[cfg.arch][2]))


def net_activation(cfg: ModelConfig) -> str | None:
    """The activation the config's nets apply: none on a gated unit's value, which is linear
    as in the VampPrior paper; ``cfg.activation`` otherwise."""
    return None if cfg.arch == "gated_mlp" else cfg.activation


def build_vae(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VAE:
    """A VAE from its config section and the [C, H, W] shape of the data."""
    c, h, w = image_shape
    likelihood = likelihood_of(cfg, image_shape)
    enc_cls, dec_cls, sizes_key = NETS[cfg.arch]
    sizes = list(getattr(cfg, sizes_key))
    act = net_activation(cfg)
    extra = {"blocks": cfg.residual_blocks} if cfg.arch == "resnet_vae" else {}
    flow = None
    if cfg.posterior == "iaf":
        hidden = list(cfg.iaf_hidden) or None
        flow = IAFFlow(cfg.latent_dim, cfg.iaf_context, steps=cfg.iaf_steps, hidden=hidden)
    context = cfg.iaf_context if flow is not None else 0
    encoder = enc_cls((c, h, w), sizes, 2 * cfg.latent_dim + context, act, cfg.batchnorm, **extra)
    out_shape = (c * likelihood.params_per_pixel, h, w)
    decoder = dec_cls(cfg.latent_dim, decoder_sizes(cfg), out_shape, act, cfg.batchnorm, **extra)
    prior = make_prior(
        cfg.prior, cfg.latent_dim, num_components=cfg.prior_components, image_shape=(c, h, w)
    )
    model = VAE(encoder, decoder, prior, likelihood, cfg.latent_dim, (c, h, w), flow)
    if isinstance(prior, VampPrior):
        # A bound method, not the encoder module: its weights stay once in the state dict.
        prior.bind(model.encode)
    return model
