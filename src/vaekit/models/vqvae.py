"""The VQ-VAE: a residual conv encoder, a vector quantizer, a decoder and a likelihood.

Training needs no prior: under a uniform prior over codes the KL term is the constant
H W log K (van den Oord et al. 2017, section 3.1). To generate, a learned autoregressive
prior over code maps (:class:`vaekit.models.code_prior.CodePrior`) is fit afterwards on the
codes of the training set (``vaekit train-prior``) and attached as ``code_prior``.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.errors import RunError
from vaekit.models.quantizer import Quantized, VectorQuantizer
from vaekit.models.vae import full_precision, likelihood_of
from vaekit.nets.resnet import DOWNSAMPLE, ResidualConvDecoder, ResidualConvEncoder
from vaekit.objectives import VQTerms


class VQVAE(nn.Module):
    """x -> z_e(x) -> nearest codes z_q -> p(x | z_q); optionally a prior p(codes)."""

    def __init__(
        self,
        encoder: nn.Module,
        quantizer: VectorQuantizer,
        decoder: nn.Module,
        likelihood: nn.Module,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.likelihood = likelihood
        self.image_shape = tuple(image_shape)
        _, h, w = self.image_shape
        self.code_shape = (h // DOWNSAMPLE, w // DOWNSAMPLE)
        # Not a submodule: the prior is fit and saved apart from the autoencoder's weights.
        self.__dict__["code_prior"] = None

    def attach_prior(self, prior: nn.Module | None) -> None:
        """Use ``prior`` (a CodePrior) for sampling and likelihoods, kept out of state_dict."""
        self.__dict__["code_prior"] = prior

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def quantize(self, x: torch.Tensor) -> Quantized:
        """Encode images in [0, 1] and quantize: codes, straight-through z_q and VQ losses."""
        return self.quantizer(self.encoder(x))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for a map of code vectors [B, D, h, w]."""
        return full_precision(self.decoder(z_q))

    def elbo(
        self, x: torch.Tensor, objective: ObjectiveConfig | str = "analytic", per_dim: bool = True
    ) -> VQTerms:
        """Per-example VQ-VAE terms (``objective`` and ``per_dim`` are ignored: q(z|x) is
        deterministic and its KL has no latents to split over)."""
        q = self.quantize(x)
        recon = -self.likelihood.log_prob(self.decode(q.z_q), x)
        return VQTerms(recon, q.codebook, q.commitment, q.codes, self.num_codes)

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code map [B, h, w] of a batch of images (no codebook updates)."""
        was_training = self.training
        self.eval()
        codes = self.quantize(x).codes
        self.train(was_training)
        return codes

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean images of p(x | z_q) for code maps [B, h, w], in [0, 1]."""
        return self.likelihood.mean(self.decode(self.quantizer.lookup(codes)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z_q(x)), in [0, 1]."""
        return self.decode_codes(self.encode_codes(x))

    @torch.no_grad()
    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean images decoded from ``n`` code maps drawn from the learned prior."""
        prior = self.code_prior
        if prior is None:
            raise RunError(
                "this VQ-VAE has no prior over codes yet, so it cannot sample: "
                "run `vaekit train-prior RUN` first"
            )
        return self.decode_codes(prior.sample(n, temperature=temperature, generator=generator))


def build_vqvae(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> VQVAE:
    """A VQ-VAE from its config section and the [C, H, W] shape of the data."""
    c, h, w = image_shape
    likelihood = likelihood_of(cfg, image_shape)
    q = cfg.quantizer
    encoder = ResidualConvEncoder(
        c, cfg.hidden_channels, cfg.residual_blocks, cfg.residual_channels, q.code_dim
    )
    decoder = ResidualConvDecoder(
        q.code_dim,
        cfg.hidden_channels,
        cfg.residual_blocks,
        cfg.residual_channels,
        c * likelihood.params_per_pixel,
    )
    return VQVAE(encoder, VectorQuantizer(q), decoder, likelihood, (c, h, w))
