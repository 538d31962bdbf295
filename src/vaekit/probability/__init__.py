"""Posteriors, priors and likelihoods in nats per example; they know nothing of networks."""

from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    GaussianLearnedScale,
    GaussianPredictedScale,
    bits_per_dim,
    make_likelihood,
)
from vaekit.probability.priors import PRIORS, StandardNormal

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "Bernoulli",
    "DiagonalGaussian",
    "DiscretizedLogistic",
    "Gaussian",
    "GaussianLearnedScale",
    "GaussianPredictedScale",
    "StandardNormal",
    "bits_per_dim",
    "make_likelihood",
]
