"""The IAF posterior against autograd Jacobians, quadrature and a per-sample loop."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from vaekit.probability import DiagonalGaussian
from vaekit.probability.flows import IAFFlow, IAFStep
from vaekit.probability.noise import RowShare, row_share


def _flow(dim: int, context: int, steps: int = 2, seed: int = 0, spread: float = 0.5) -> IAFFlow:
    """A float64 flow with weights drawn wide, so that every step is far from the identity."""
    torch.manual_seed(seed)
    flow = IAFFlow(dim, context, steps=steps, hidden=[16, 16], gate_bias=0.0).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, spread)
    return flow


def _posterior(batch: int, dim: int, seed: int = 1) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    log_var = 0.5 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return DiagonalGaussian(mean, log_var)


def test_log_det_matches_slogdet_of_the_autograd_jacobian():
    flow = _flow(dim=4, context=3, steps=3)
    h = torch.randn(1, 3, dtype=torch.float64)
    z0 = torch.randn(1, 4, dtype=torch.float64)
    jac = jacobian(lambda z: flow.transform(z[None], h)[0][0], z0[0])  # [4, 4]
    sign, log_abs_det = torch.linalg.slogdet(jac)
    _, log_det = flow.transform(z0, h)
    assert sign != 0
    torch.testing.assert_close(log_det.sum(), log_abs_det)
    # Not a diagonal map: the test would pass trivially if the masks cut every connection.
    assert (jac - torch.diag(jac.diagonal())).abs().max() > 1e-3


@pytest.mark.parametrize("reverse", [False, True])
def test_one_step_is_triangular_in_its_order_with_diagonal_sigma(reverse):
    torch.manual_seed(0)
    step = IAFStep(4, 2, hidden=[12, 12], reverse=reverse, gate_bias=0.0).double()
    with torch.no_grad():
        for p in step.parameters():
            p.normal_(0.0, 0.5)
    h = torch.randn(1, 2, dtype=torch.float64)
    z = torch.randn(4, dtype=torch.float64)
    jac = jacobian(lambda v: step(v[None], h)[0][0], z)
    # Output i may depend on input j only when j comes before i in the step's order: lower
    # triangular for 1..D, upper triangular for the reversed order D..1.
    strictly_later = torch.ones(4, 4).triu(1) if not reverse else torch.ones(4, 4).tril(-1)
    assert torch.all(jac[strictly_later.bool()] == 0)
    earlier = strictly_later.T.bool()
    assert torch.all(jac[earlier].abs() > 0)
    _, log_sigma = step(z[None], h)
    torch.testing.assert_close(jac.diagonal().log(), log_sigma[0])


def test_context_reaches_every_coordinate_including_the_first():
    flow = _flow(dim=3, context=2, steps=1)
    z0 = torch.randn(1, 3, dtype=torch.float64)
    h = torch.randn(1, 2, dtype=torch.float64)
    jac = jacobian(lambda c: flow.transform(z0, c[None])[0][0], h[0])  # [3, 2]
    assert torch.all(jac.abs().sum(1) > 0)


def test_density_integrates_to_one_on_a_grid():
    # D = 2, one x: q(z_T|x) evaluated on a grid by inverting the flow, summed times the cell
    # area. The steps squeeze q0 into a narrow ridge, so the grid spans the box that 10^5
    # samples fill, padded by 1 on each side (beyond it q0 lies past 6 sigma).
    flow = _flow(dim=2, context=3, steps=2, spread=0.7)
    q0 = DiagonalGaussian(
        torch.tensor([[0.3, -0.5]], dtype=torch.float64),
        torch.tensor([[0.2, -0.4]], dtype=torch.float64),
    )
    h = torch.randn(1, 3, dtype=torch.float64)
    with torch.no_grad():
        z, _ = flow.sample_and_log_prob(q0, h, (100_000,))
        low, high = z.amin((0, 1)) - 1.0, z.amax((0, 1)) + 1.0
        axes = [
            torch.linspace(a, b, 801, dtype=torch.float64) for a, b in zip(low, high, strict=True)
        ]
        grid = torch.cartesian_prod(*axes)[:, None, :]  # [N, 1, 2]: N latents of one image
        log_q = flow.log_prob(grid, h, q0)  # [N, 1]
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    mass = log_q.exp().sum() * cell
    assert abs(mass.item() - 1.0) < 1e-3


def test_inverse_recovers_z0_and_log_prob_matches_the_sampled_density():
    # The change-of-variables check by Monte Carlo: for z_T = f(z0), the density that the
    # forward pass reports equals the one found by inverting z_T.
    flow = _flow(dim=5, context=4, steps=3)
    q0 = _posterior(batch=6, dim=5)
    h = torch.randn(6, 4, dtype=torch.float64)
    z0 = q0.rsample((7,))
    z, log_q = flow(z0, h, q0)
    back, _ = flow.inverse(z, h)
    torch.testing.assert_close(back, z0)
    torch.testing.assert_close(flow.log_prob(z, h, q0), log_q)


def test_a_leading_sample_dimension_matches_a_loop():
    flow = _flow(dim=4, context=3)
    q0 = _posterior(batch=5, dim=4)
    h = torch.randn(5, 3, dtype=torch.float64)
    z0 = q0.rsample((6,))  # [K, B, D]
    z, log_q = flow(z0, h, q0)
    assert z.shape == (6, 5, 4) and log_q.shape == (6, 5)
    for k in range(6):
        zk, log_qk = flow(z0[k], h, q0)
        torch.testing.assert_close(z[k], zk)
        torch.testing.assert_close(log_q[k], log_qk)


def test_log_q_is_the_base_density_minus_the_per_dim_log_det():
    flow = _flow(dim=4, context=3)
    q0 = _posterior(batch=5, dim=4)
    h = torch.randn(5, 3, dtype=torch.float64)
    z0 = q0.rsample()
    _, log_q = flow(z0, h, q0)
    _, log_det = flow.transform(z0, h)
    torch.testing.assert_close(log_q, (q0.log_prob_per_dim(z0) - log_det).sum(-1))


def test_sampling_draws_through_rsample_and_keeps_data_parallel_noise_global():
    flow = _flow(dim=3, context=2)
    q0 = _posterior(batch=6, dim=3)
    h = torch.randn(6, 2, dtype=torch.float64)
    z, log_q = flow.sample_and_log_prob(q0, h, (4,), generator=torch.Generator().manual_seed(9))
    expected = flow(q0.rsample((4,), generator=torch.Generator().manual_seed(9)), h, q0)
    torch.testing.assert_close((z, log_q), expected)
    share = RowShare(2, 5, 6)
    rows = slice(share.start, share.stop)
    part_q0 = DiagonalGaussian(q0.mean[rows], q0.log_var[rows])
    with row_share(share):
        part = flow.sample_and_log_prob(
            part_q0, h[rows], (4,), generator=torch.Generator().manual_seed(9)
        )
    torch.testing.assert_close(part[0], z[:, rows])
    torch.testing.assert_close(part[1], log_q[:, rows])


def test_gradients_reach_the_encoder_outputs_and_every_flow_parameter():
    flow = IAFFlow(4, 3, steps=2, hidden=[8])
    mean = torch.randn(5, 4, requires_grad=True)
    log_var = torch.randn(5, 4, requires_grad=True)
    h = torch.randn(5, 3, requires_grad=True)
    z, log_q = flow.sample_and_log_prob(DiagonalGaussian(mean, log_var), h, (2,))
    (z.square().sum() + log_q.sum()).backward()
    for name, t in [("mean", mean), ("log_var", log_var), ("h", h)]:
        assert t.grad is not None and t.grad.abs().sum() > 0, name
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_fresh_flow_starts_close_to_the_identity():
    # s starts near +2 (Kingma et al. 2016, section 4), so each step moves z only a little.
    torch.manual_seed(0)
    flow = IAFFlow(8, 4, steps=2)
    z0 = torch.randn(16, 8)
    _, log_det = flow.transform(z0, torch.randn(16, 4))
    two_steps = 2 * math.log(1 / (1 + math.exp(-2.0)))  # 2 log sigmoid(2) = -0.25
    assert log_det.mean().item() == pytest.approx(two_steps, abs=0.1)


def test_one_latent_and_no_context_are_allowed():
    flow = IAFFlow(1, 0, steps=2)
    q0 = DiagonalGaussian(torch.zeros(3, 1), torch.zeros(3, 1))
    z, log_q = flow.sample_and_log_prob(q0, None)
    assert z.shape == (3, 1) and log_q.shape == (3,)
    with pytest.raises(ValueError, match="last dim"):
        flow.transform(torch.zeros(3, 2), None)
    with pytest.raises(ValueError, match="context"):
        IAFFlow(2, 3)(torch.zeros(1, 2), None, q0)


def test_the_inverse_is_differentiable_with_the_inverse_jacobian():
    # D passes reach the exact inverse as a function of z_T, not only its value, so gradients
    # through log_prob (e.g. a DReG-style estimator's log q at stopped parameters) are exact.
    flow = _flow(dim=3, context=2, steps=2)
    h = torch.randn(1, 2, dtype=torch.float64)
    z0 = torch.randn(3, dtype=torch.float64)
    forward = jacobian(lambda v: flow.transform(v[None], h)[0][0], z0)
    z = flow.transform(z0[None], h)[0][0].detach()
    backward = jacobian(lambda v: flow.inverse(v[None], h)[0][0], z)
    torch.testing.assert_close(backward @ forward, torch.eye(3, dtype=torch.float64))
