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
from vaekit.probability.priors import (
    PRIORS,
    DiagonalMixturePrior,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
    make_prior,
    marginal_icdf,
)

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "Bernoulli",
    "DiagonalGaussian",
    "DiagonalMixturePrior",
    "DiscretizedLogistic",
    "Gaussian",
    "GaussianLearnedScale",
    "GaussianPredictedScale",
    "MixtureOfGaussians",
    "StandardNormal",
    "VampPrior",
    "bits_per_dim",
    "make_likelihood",
    "make_prior",
    "marginal_icdf",
]
