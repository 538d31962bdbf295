"""Pictures of the latent space: interpolations, the 2-D manifold, traversals and a scatter.

The tensor functions (``interpolate``, ``manifold``, ``traversals``) return images in [0, 1]
of shape [N, C, H, W] and leave tiling to :mod:`vaekit.viz.grid`; the ``save_*`` functions
write one labelled PNG each, the unit a command-line call or the report asks for.

A ladder VAE (:class:`~vaekit.models.HierarchicalVAE`) has one latent vector per layer: its
interpolations run in z_1, the layer its decoder reads, and its traversals are per layer
(:func:`ladder_traversals`); the 2-D manifold has no meaning for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from matplotlib.lines import Line2D

from vaekit.atomic import atomic_write_bytes
from vaekit.diagnostics import (
    active_units,
    kl_to_prior_per_dim,
    ladder_statistics,
    posterior_params,
)
from vaekit.errors import VaekitError
from vaekit.models import VAE, HierarchicalVAE
from vaekit.probability.priors import StandardNormal, marginal_icdf
from vaekit.viz.grid import save_labelled_grid
from vaekit.viz.plots import figure_png, style_axes, styled

Mode = Literal["linear", "slerp"]

# Burda et al. (2015), section 5.2: unit u is active when Cov_x(E_q[z_u | x]) > 0.01.
ACTIVE_THRESHOLD = 0.01


class LatentDimError(VaekitError, ValueError):
    """A picture needs a latent space of another dimension (the manifold needs exactly 2)."""


# --------------------------------------------------------------------------- paths in z


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (1 - t) a + t b: a, b [..., D] and t [T] give [..., T, D]."""
    t = t.to(a.dtype).view(-1, 1)
    return a.unsqueeze(-2) * (1 - t) + b.unsqueeze(-2) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation: a, b [..., D] and t [T] give [..., T, D].

    slerp(a, b; t) = sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b with
    cos(theta) = a.b / (|a| |b|) (Shoemake 1985; White 2016, "Sampling generative networks",
    who uses it for latents because Gaussian draws in high dimension lie near a sphere, so a
    straight line between two of them passes through the improbable region near the origin).
    When a and b are nearly parallel or opposite (sin theta < eps) the formula is 0 / 0 and the
    straight line is used instead.
    """
    a64, b64 = a.double(), b.double()
    norms = a64.norm(dim=-1) * b64.norm(dim=-1)
    cos = ((a64 * b64).sum(-1) / norms.clamp_min(1e-300)).clamp(-1.0, 1.0)
    theta = torch.acos(cos)[..., None, None]  # [..., 1, 1]
    sin = torch.sin(theta)
    tt = t.double().view(-1, 1)  # [T, 1]
    degenerate = (sin < eps) | (norms[..., None, None] == 0)
    safe_sin = torch.where(degenerate, torch.ones_like(sin), sin)
    w_a = torch.where(degenerate, 1 - tt, torch.sin((1 - tt) * theta) / safe_sin)
    w_b = torch.where(degenerate, tt, torch.sin(tt * theta) / safe_sin)
    out = a64.unsqueeze(-2) * w_a + b64.unsqueeze(-2) * w_b
    return out.to(a.dtype)


PATHS = {"linear": lerp, "slerp": slerp}


def latent_path(z_a: torch.Tensor, z_b: torch.Tensor, steps: int, mode: Mode) -> torch.Tensor:
    """``steps`` points from z_a to z_b (both included): [P, D] pairs give [P, steps, D]."""
    if mode not in PATHS:
        raise ValueError(f"mode must be 'linear' or 'slerp', got {mode!r}")
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two endpoints), got {steps}")
    return PATHS[mode](z_a, z_b, torch.linspace(0.0, 1.0, steps))


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def decoder_latents(model: VAE | HierarchicalVAE, x: torch.Tensor) -> torch.Tensor:
    """Posterior means of the latent the decoder reads, [B, D]: z of a one-layer VAE, z_1 of
    a ladder VAE on its mean path (which decodes to its reconstruction)."""
    if isinstance(model, HierarchicalVAE):
        return model.encode_layers(x)[0].mean
    return model.encode(x).mean


@torch.no_grad()
def interpolate(
    model: VAE,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    steps: int = 10,
    mode: Mode = "linear",
    *,
    with_originals: bool = True,
) -> torch.Tensor:
    """Decoded paths between the posterior means of image pairs, one pair per row.

    Each row is ``original a | decode(z(t)) for steps t in [0, 1] | original b``, so
    [P, C, H, W] pairs give [P * (steps + 2), C, H, W] images (``steps`` per row without
    the originals); tile with ``nrow = steps + 2``. The path runs in the latent the decoder
    reads (:func:`decoder_latents`).
    """
    x_a, x_b = _as_batch(x_a), _as_batch(x_b)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b differ in shape: {tuple(x_a.shape)} vs {tuple(x_b.shape)}")
    z_a, z_b = decoder_latents(model, x_a), decoder_latents(model, x_b)
    path = latent_path(z_a, z_b, steps, mode)  # [P, T, D]
    p, t, d = path.shape
    decoded = model.decode_mean(path.reshape(p * t, d)).reshape(p, t, *x_a.shape[1:])
    if with_originals:
        decoded = torch.cat([x_a.unsqueeze(1), decoded, x_b.unsqueeze(1)], dim=1)
    return decoded.reshape(-1, *x_a.shape[1:])


# --------------------------------------------------------------------------- 2-D manifold


def manifold_quantiles(n: int, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """``n`` standard-normal quantiles at probabilities linspace(lo, hi) (finite ends)."""
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"need 0 < lo < hi < 1, got lo={lo}, hi={hi}")
    return torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(lo, hi, n))


def _prior_of(model: VAE) -> torch.nn.Module | None:
    """The model's prior p(z); None (taken as N(0, I)) for a stand-in without one."""
    return getattr(model, "prior", None)


def prior_quantiles(
    prior: torch.nn.Module | None, n: int, lo: float = 0.05, hi: float = 0.95
) -> torch.Tensor:
    """[n, D] quantiles of each latent's prior marginal at probabilities linspace(lo, hi).

    N(0, I) (or no prior) gives :func:`manifold_quantiles` in every column; a mixture prior
    its own marginal quantiles, so the grid covers where its samples lie.
    """
    q = manifold_quantiles(n, lo, hi)  # also checks 0 < lo < hi < 1
    if prior is None or isinstance(prior, StandardNormal):
        return q[:, None].expand(-1, 2 if prior is None else prior.dim)
    return marginal_icdf(prior, torch.linspace(lo, hi, n)).cpu()


def manifold_latents(
    n: int, lo: float = 0.05, hi: float = 0.95, prior: torch.nn.Module | None = None
) -> torch.Tensor:
    """The [n*n, 2] latents of the manifold grid in row-major order, top row first.

    Column c has z1 = q1[c] (growing to the right); row r has z2 = q2[n - 1 - r], so z2
    grows upward as on a plotted y axis (Kingma & Welling 2014, figure 4). q1 and q2 are the
    quantiles of the prior's two marginals (standard-normal quantiles for N(0, I)).
    """
    q = prior_quantiles(prior, n, lo, hi)
    z2, z1 = torch.meshgrid(q[:, 1].flip(0), q[:, 0], indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


@torch.no_grad()
def manifold(model: VAE, n: int = 20, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """Decoded [n*n, C, H, W] grid over the 2-D latent plane at the prior's marginal
    quantiles (tile n wide)."""
    if model.latent_dim != 2:
        raise LatentDimError(
            f"the manifold picture needs a 2-D latent space, this model has latent_dim = "
            f"{model.latent_dim} (train with --set model.latent_dim=2)"
        )
    return model.decode_mean(manifold_latents(n, lo, hi, _prior_of(model)))


# --------------------------------------------------------------------------- traversals


@dataclass
class LatentSummary:
    """Posterior statistics over a dataset: what the scatter, KL and traversal pictures need."""

    means: torch.Tensor  # [N, D] posterior means E_q[z | x]
    kl_per_dim: torch.Tensor  # [D] mean over examples of KL(q(z_d | x) || p(z_d)), nats
    activity: torch.Tensor  # [D] Cov_x(E_q[z_d | x]) (Burda et al. 2015)
    # A ladder VAE's layer widths (D_1, ..., D_L): the columns above are [z_1, ..., z_L].
    layer_dims: tuple[int, ...] = ()

    @property
    def active(self) -> torch.Tensor:
        """[D] booleans: activity above :data:`ACTIVE_THRESHOLD`."""
        return self.activity > ACTIVE_THRESHOLD

    def order(self) -> list[int]:
        """Latent dimensions from most to least KL (ties keep index order)."""
        return sorted(range(len(self.kl_per_dim)), key=lambda d: -float(self.kl_per_dim[d]))

    @property
    def layer_slices(self) -> list[slice]:
        """Where each ladder layer's columns lie, layer 1 first (none for a one-layer VAE)."""
        ends = np.cumsum(self.layer_dims).tolist()
        return [slice(end - n, end) for end, n in zip(ends, self.layer_dims, strict=True)]

    def layer_kl(self) -> list[float]:
        """The KL of each ladder layer, the sum of its dimensions' (layer 1 first)."""
        return [float(self.kl_per_dim[s].sum()) for s in self.layer_slices]

    def layer_order(self, layer: int) -> list[int]:
        """Dimensions of ladder layer ``layer`` (indices within it), from most to least KL."""
        if not 1 <= layer <= len(self.layer_dims):
            raise ValueError(f"layer must be in 1..{len(self.layer_dims)}, got {layer}")
        kl = self.kl_per_dim[self.layer_slices[layer - 1]]
        return sorted(range(len(kl)), key=lambda d: -float(kl[d]))

    def latent_names(self) -> list[str]:
        """A name per column: "z<d>", or "z<layer>[<d>]" for a ladder VAE."""
        if not self.layer_dims:
            return [f"z{d}" for d in range(len(self.kl_per_dim))]
        return [f"z{i}[{d}]" for i, n in enumerate(self.layer_dims, start=1) for d in range(n)]


@torch.no_grad()
def summarize_posteriors(
    model: VAE | HierarchicalVAE, x: torch.Tensor, batch_size: int = 500, seed: int = 0
) -> LatentSummary:
    """Posterior means, mean KL per dimension and activity over the images ``x`` in [0, 1].

    For a ladder VAE, every layer's (:func:`~vaekit.diagnostics.ladder_statistics`: the KL of
    its ELBO, whose posterior noise ``seed`` fixes, and the mean path's means).
    """
    batches = [x[start : start + batch_size] for start in range(0, x.shape[0], batch_size)]
    if isinstance(model, HierarchicalVAE):
        kl, means = ladder_statistics(model, batches, seed)
        _, activity = active_units(means)
        return LatentSummary(means.float(), kl, activity, tuple(model.latent_dims))
    mean, log_var = posterior_params(model, batches)
    _, activity = active_units(mean)
    prior = _prior_of(model)
    if prior is None:
        prior = StandardNormal(mean.shape[1])
    kl = kl_to_prior_per_dim(prior, mean, log_var)
    return LatentSummary(means=mean.float(), kl_per_dim=kl, activity=activity)


def traversal_dims(
    model: VAE, x_ref: torch.Tensor, order: Sequence[int] | None = None, max_dims: int = 10
) -> list[int]:
    """The latent dimensions a traversal shows, in row order.

    ``order`` (e.g. dimensions sorted by KL) wins; without it a batch ``x_ref`` ranks
    dimensions by the variance of their posterior means over the batch, and a single image
    keeps index order.
    """
    d = model.latent_dim
    if order is not None:
        dims = [int(i) for i in order]
        bad = [i for i in dims if not 0 <= i < d]
        if bad:
            raise ValueError(f"order names latent dimensions {bad} outside 0..{d - 1}")
    elif _as_batch(x_ref).shape[0] > 1:
        dims = summarize_posteriors(model, _as_batch(x_ref)).activity.argsort(descending=True)
        dims = [int(i) for i in dims]
    else:
        dims = list(range(d))
    return dims[: max(1, max_dims)]


def default_traversal_values(count: int = 9, limit: float = 3.0) -> torch.Tensor:
    """``count`` evenly spaced latent values from -limit to limit.

    In prior standard deviations for N(0, I); for a mixture prior they are plain z values,
    the same for every row (a shared scale keeps the columns comparable).
    """
    return torch.linspace(-limit, limit, count)


@torch.no_grad()
def traversals(
    model: VAE,
    x_ref: torch.Tensor,
    order: Sequence[int] | None = None,
    values: torch.Tensor | None = None,
    max_dims: int = 10,
) -> torch.Tensor:
    """One row per latent dimension: that dimension set to each of ``values``, the others
    held at the posterior mean of the reference image (the first of ``x_ref``).

    Gives [rows * len(values), C, H, W]; tile with ``nrow = len(values)``. Rows follow
    :func:`traversal_dims`.
    """
    values = default_traversal_values() if values is None else torch.as_tensor(values).float()
    x_ref = _as_batch(x_ref)
    dims = traversal_dims(model, x_ref, order, max_dims)
    base = model.encode(x_ref[:1]).mean[0]  # [D]
    z = base.repeat(len(dims), len(values), 1)  # [rows, V, D]
    for row, dim in enumerate(dims):
        z[row, :, dim] = values.to(z.dtype)
    return model.decode_mean(z.reshape(-1, model.latent_dim))


LadderRow = tuple[int, int]  # (layer, dimension within the layer) of one traversal row


@torch.no_grad()
def ladder_traversals(
    model: HierarchicalVAE, x_ref: torch.Tensor, rows: Sequence[LadderRow], values: torch.Tensor
) -> torch.Tensor:
    """One row per (layer, dim): that latent set to each of its row of ``values`` [rows, V],
    the rest of its layer at the reference image's posterior mean; [rows * V, C, H, W].

    Lower layers follow from the changed one by their conditional prior means
    (:meth:`~vaekit.models.HierarchicalVAE.traverse` with lower = "prior"): what the latent
    means in the generative model. Keeping the image's own evidence below instead (lower =
    "posterior") mixes it in by precision: where a lower layer's bottom-up Gaussian is narrow
    it overrides the change, and the row would show the encoder's confidence, not the latent.
    """
    values = torch.as_tensor(values).float()
    if len(rows) == 0 or values.shape[0] != len(rows):
        raise ValueError(
            f"need one row of values per (layer, dim) row, got {len(rows)} rows "
            f"and values of shape {tuple(values.shape)}"
        )
    x_ref = _as_batch(x_ref)
    return torch.cat(
        [
            model.traverse(x_ref, layer, [d], row_values, lower="prior")
            for (layer, d), row_values in zip(rows, values, strict=True)
        ]
    )


def data_spread(means: torch.Tensor, columns: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over examples of some columns of posterior means [N, D].

    A ladder VAE's lower layers have no fixed prior scale (p(z_i | z_i+1) moves with the layer
    above, and its posterior means may spread far wider than 1), so its traversal rows span
    where the test images put each latent: mean + k std.
    """
    picked = means[:, list(columns)].double()
    return picked.mean(0), picked.std(0, correction=0)


# --------------------------------------------------------------------------- scatter


def pca_2d(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project [N, D] points on their first two principal components.

    Returns (projections [N, 2], components [2, D] with unit rows, explained variance ratio
    [2]). Exact SVD of the centred data; each component's sign makes its largest-magnitude
    entry positive, so the picture does not flip between runs.
    """
    x = x.double()
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs [N >= 2, D] points, got shape {tuple(x.shape)}")
    centred = x - x.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(2, vh.shape[0])
    comps = vh[:k]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    total = (s**2).sum()
    ratio = (s[:k] ** 2) / total if total > 0 else torch.zeros(k, dtype=x.dtype)
    if k < 2:  # D == 1: pad with a zero component
        comps = torch.cat([comps, torch.zeros(1, x.shape[1], dtype=x.dtype)])
        ratio = torch.cat([ratio, torch.zeros(1, dtype=x.dtype)])
    return centred @ comps.T, comps, ratio


@styled
def latent_scatter(
    means: torch.Tensor,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] = (),
    *,
    title: str | None = None,
    max_points: int = 5000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> bytes:
    """PNG scatter of posterior means, coloured by class: PCA to 2-D when D > 2.

    ``names`` names the latent columns (default "z1", "z2", ...), in the axes and the title.
    """
    from matplotlib.figure import Figure

    means = torch.as_tensor(means).double()
    if means.dim() != 2 or means.shape[0] == 0:
        raise ValueError(f"means must be [N > 0, D], got shape {tuple(means.shape)}")
    if labels is not None:
        labels = torch.as_tensor(labels).long()
        if labels.shape[0] != means.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {means.shape[0]} points")
    n, d = means.shape
    # Named columns (a ladder VAE's layers) go on a line of their own: the title stays narrow.
    span = "" if names is None else f"\n{names[0]} .. {names[-1]}"
    names = list(names) if names is not None else [f"z{i + 1}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} names for {d} latent columns")
    if n > max_points:  # a seeded subset keeps the picture readable and deterministic
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points]
        means = means[keep]
        labels = None if labels is None else labels[keep]
    if d > 2 and means.shape[0] >= 2:
        xy, _, ratio = pca_2d(means)
        xlabel, ylabel = (f"PC{i + 1} ({100 * float(ratio[i]):.0f}% of variance)" for i in (0, 1))
        what = "posterior means, first two principal components of"
        what += f" {d}-D z" if not span else f" {d} latents"
    elif d == 1:
        jitter = torch.rand(means.shape[0], generator=torch.Generator().manual_seed(seed))
        xy = torch.stack([means[:, 0], jitter.double() - 0.5], dim=1)
        xlabel, ylabel, what = names[0], "random jitter (no meaning)", "posterior means, 1-D z"
    else:
        xy = means[:, :2]
        xlabel, ylabel, what = names[0], names[1], "posterior means"
    xy = xy.numpy()

    def _name(cls: int) -> str:
        return class_names[cls] if 0 <= cls < len(class_names) else str(cls)

    fig = Figure(figsize=(7.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.5, color="C0", linewidths=0)
    else:
        classes = sorted(set(labels.tolist()))
        cmap = _class_colours(len(classes))
        index = {cls: i for i, cls in enumerate(classes)}
        colours = np.array([cmap[index[c]] for c in labels.tolist()])
        # One scatter in a seeded random order, so no class is always painted on top.
        shuffle = torch.randperm(len(xy), generator=torch.Generator().manual_seed(seed)).numpy()
        ax.scatter(xy[shuffle, 0], xy[shuffle, 1], s=5, alpha=0.6, c=colours[shuffle], linewidths=0)
        handles = [
            Line2D([], [], ls="", marker="o", ms=7, color=cmap[index[c]], label=_name(c))
            for c in classes
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            fontsize=10,
            title="class",
        )
    if d > 1:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{what}{span} ({len(xy)} test images)")
    style_axes(ax)
    return figure_png(fig)


def _class_colours(k: int) -> list:
    import matplotlib

    name = "tab10" if k <= 10 else "tab20"
    cmap = matplotlib.colormaps[name]
    return [cmap(i % cmap.N) for i in range(k)]


# --------------------------------------------------------------------------- files


def save_interpolation(
    model: VAE,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    path: str | Path,
    *,
    steps: int = 10,
    mode: Mode = "linear",
) -> Path:
    """Write the interpolation rows of :func:`interpolate` as one labelled PNG."""
    images = interpolate(model, x_a, x_b, steps, mode)
    ts = torch.linspace(0, 1, steps).tolist()
    cols = ["original"] + [f"t={t:g}" if t in (0.0, 1.0) else "" for t in ts] + ["original"]
    return save_labelled_grid(images, path, nrow=steps + 2, col_labels=cols, scale=2)


def save_manifold(
    model: VAE, path: str | Path, *, n: int = 20, lo: float = 0.05, hi: float = 0.95
) -> Path:
    """Write the 2-D manifold as a labelled PNG: z1 across (left to right), z2 up."""
    images = manifold(model, n, lo, hi)
    q = prior_quantiles(_prior_of(model), n, lo, hi)
    return save_labelled_grid(
        images,
        path,
        nrow=n,
        col_labels=[f"{v:.1f}" for v in q[:, 0].tolist()],
        row_labels=[f"{v:.1f}" for v in reversed(q[:, 1].tolist())],
        corner="z2 \u2191  z1 \u2192",
        scale=2,
        font_size=22,
    )


def save_traversals(
    model: VAE,
    x_ref: torch.Tensor,
    path: str | Path,
    *,
    order: Sequence[int] | None = None,
    values: torch.Tensor | None = None,
    max_dims: int = 10,
    kl_per_dim: torch.Tensor | None = None,
) -> Path:
    """Write :func:`traversals` as a labelled PNG: rows "z<d>" (with KL when given), columns
    the latent values."""
    values = default_traversal_values() if values is None else torch.as_tensor(values).float()
    dims = traversal_dims(model, x_ref, order, max_dims)
    images = traversals(model, x_ref, dims, values, len(dims))
    rows = [f"z{d}" if kl_per_dim is None else f"z{d}  KL {float(kl_per_dim[d]):.2f}" for d in dims]
    return _save_traversal_grid(images, path, rows, [f"{v:g}" for v in values.tolist()])


def save_ladder_traversals(
    model: HierarchicalVAE,
    x_ref: torch.Tensor,
    path: str | Path,
    *,
    rows: Sequence[LadderRow],
    summary: LatentSummary,
    offsets: torch.Tensor | None = None,
) -> Path:
    """Write :func:`ladder_traversals` as a labelled PNG, each row over the test images' spread
    of its latent (:func:`data_spread` of ``summary.means``: its mean + ``offsets`` standard
    deviations, -3 to 3 by default): rows "z<layer>[<d>]" with the KL and that standard
    deviation, columns the offsets."""
    offsets = default_traversal_values() if offsets is None else torch.as_tensor(offsets)
    columns = [summary.layer_slices[layer - 1].start + d for layer, d in rows]
    centre, spread = data_spread(summary.means, columns)
    values = centre[:, None] + spread[:, None] * offsets.double()
    images = ladder_traversals(model, x_ref, rows, values)
    labels = [
        f"z{layer}[{d}]  KL {float(summary.kl_per_dim[c]):.2f}  \u03c3 {float(sd):.2f}"
        for (layer, d), c, sd in zip(rows, columns, spread, strict=True)
    ]
    cols = ["mean" if v == 0 else f"{v:+g}\u03c3" for v in offsets.tolist()]
    return _save_traversal_grid(images, path, labels, cols)


def _save_traversal_grid(
    images: torch.Tensor, path: str | Path, row_labels: list[str], col_labels: list[str]
) -> Path:
    """Traversal rows as one PNG, labelled by row and by latent value above each column."""
    return save_labelled_grid(
        images,
        path,
        nrow=len(col_labels),
        row_labels=row_labels,
        col_labels=col_labels,
        corner="dim",
        scale=2,
    )


def save_latent_scatter(
    means: torch.Tensor,
    labels: torch.Tensor | None,
    class_names: Sequence[str],
    path: str | Path,
    *,
    max_points: int = 5000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> Path:
    """Write :func:`latent_scatter` to ``path``."""
    png = latent_scatter(means, labels, class_names, max_points=max_points, seed=seed, names=names)
    atomic_write_bytes(path, png)
    return Path(path)


__all__ = [
    "ACTIVE_THRESHOLD",
    "LatentDimError",
    "LatentSummary",
    "data_spread",
    "decoder_latents",
    "interpolate",
    "ladder_traversals",
    "latent_path",
    "latent_scatter",
    "lerp",
    "manifold",
    "manifold_latents",
    "manifold_quantiles",
    "pca_2d",
    "prior_quantiles",
    "save_interpolation",
    "save_ladder_traversals",
    "save_latent_scatter",
    "save_manifold",
    "save_traversals",
    "slerp",
    "summarize_posteriors",
    "traversal_dims",
    "traversals",
]
