"""StandardNormal prior against torch.distributions."""

import pytest
import torch
from torch.distributions import Independent, Normal

from vaekit.probability import PRIORS, StandardNormal


def test_log_prob_matches_torch_distributions():
    prior = StandardNormal(6).double()
    z = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    expected = Independent(Normal(torch.zeros(6, dtype=torch.float64), 1.0), 1).log_prob(z)
    assert prior.log_prob(z).shape == (3, 4)
    torch.testing.assert_close(prior.log_prob(z), expected)
    torch.testing.assert_close(prior.log_prob_per_dim(z), Normal(0.0, 1.0).log_prob(z))


def test_wrong_latent_dim_rejected():
    with pytest.raises(ValueError, match="last dim 6"):
        StandardNormal(6).log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError):
        StandardNormal(0)


def test_sample_shape_and_reproducibility():
    prior = StandardNormal(4)
    a = prior.sample(10, generator=torch.Generator().manual_seed(1))
    b = prior.sample(10, generator=torch.Generator().manual_seed(1))
    assert a.shape == (10, 4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_temperature_scales_sample_std():
    prior = StandardNormal(8)
    cold = prior.sample(50_000, generator=torch.Generator().manual_seed(2), temperature=0.5)
    warm = prior.sample(50_000, generator=torch.Generator().manual_seed(2), temperature=1.0)
    torch.testing.assert_close(cold, 0.5 * warm)
    # the sample std has standard error about std / sqrt(2n)
    assert abs(cold.std().item() - 0.5) < 5 * 0.5 / (2 * 400_000) ** 0.5
    assert torch.all(prior.sample(3, temperature=0.0) == 0)


def test_buffer_carries_dtype_and_checkpoint_has_no_keys():
    prior = StandardNormal(3).to(torch.float64)
    assert prior.sample(2).dtype == torch.float64
    assert dict(prior.state_dict()) == {}
    assert PRIORS["standard_normal"] is StandardNormal
