"""The hardware limit of a workload: its bare matrix products and convolutions, timed alone.

For training, every layer runs its forward product and its backward products (input and weight
gradients; no input gradient for the first layer) with torch ops called directly, one call per
layer and product, no autograd, activations, optimiser or data. For importance-weighted
evaluation the decoder's forward products at the evaluation's chunk shape. The resulting
samples/s is what the model could reach if everything but matrix work took no time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _linear_ops(layer: nn.Linear, rows: int, first: bool, backward: bool, dt) -> list[Callable]:
    dev = layer.weight.device
    w = layer.weight.detach().to(dt)
    b = layer.bias.detach().to(dt)
    x = torch.randn(rows, layer.in_features, device=dev, dtype=dt)
    g = torch.randn(rows, layer.out_features, device=dev, dtype=dt)
    ops = [lambda: F.linear(x, w, b)]
    if backward:
        if not first:
            ops.append(lambda: torch.mm(g, w))
        ops.append(lambda: torch.mm(g.t(), x))
    return ops


def _conv_ops(layer: nn.Module, x_shape, first: bool, backward: bool, dt, fmt) -> list[Callable]:
    dev = layer.weight.device
    w = layer.weight.detach().to(dt)
    b = layer.bias.detach().to(dt)
    x = torch.randn(x_shape, device=dev, dtype=dt).contiguous(memory_format=fmt)
    transposed = isinstance(layer, nn.ConvTranspose2d)
    if transposed:
        y = F.conv_transpose2d(
            x, w, b, layer.stride, layer.padding, layer.output_padding, dilation=layer.dilation
        )
    else:
        y = F.conv2d(x, w, b, layer.stride, layer.padding)
    g = torch.randn_like(y).contiguous(memory_format=fmt)
    pad = layer.padding
    if transposed:
        ops = [
            lambda: F.conv_transpose2d(
                x, w, b, layer.stride, pad, layer.output_padding, dilation=layer.dilation
            )
        ]
    else:
        ops = [lambda: F.conv2d(x, w, b, layer.stride, pad)]
    if backward:
        out_pad = layer.output_padding if transposed else (0, 0)
        mask = [not first, True, True]
        ops.append(
            lambda: torch.ops.aten.convolution_backward(
                g,
                x,
                w,
                [w.shape[1] if transposed else w.shape[0]],
                layer.stride,
                pad,
                layer.dilation,
                transposed,
                out_pad,
                1,
                mask,
            )
        )
    return ops


def layer_ops(
    model: nn.Module,
    batch: int,
    image_shape: tuple[int, int, int],
    *,
    backward: bool,
    modules: str = "all",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> list[Callable]:
    """One callable per bare product of ``model``'s layers at ``batch`` rows, in order.

    Shapes come from one real forward pass (hooks record each layer's input shape).
    ``modules`` = "decoder" keeps only the decoder's layers (importance sampling).
    """
    shapes: dict[nn.Module, tuple[int, ...]] = {}
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    root = model.decoder if modules == "decoder" else model

    def record(m: nn.Module, args: tuple) -> None:
        shapes.setdefault(m, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in root.modules() if isinstance(m, kinds)]
    param = next(model.parameters())
    with torch.no_grad():
        if modules == "decoder":
            model.decode(torch.zeros(batch, model.latent_dim, device=param.device))
        else:
            q = model.encode(torch.zeros(batch, *image_shape, device=param.device))
            model.decode(q.mean)
    for h in hooks:
        h.remove()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ops: list[Callable] = []
    first_layer = modules == "all"
    for m, shape in shapes.items():
        if isinstance(m, nn.Linear):
            rows = int(torch.tensor(shape[:-1]).prod())
            ops += _linear_ops(m, rows, first_layer, backward, dtype)
        else:
            ops += _conv_ops(m, shape, first_layer, backward, dtype, fmt)
        first_layer = False
    return ops


def time_ops(ops: list[Callable], device: torch.device, min_seconds: float = 1.0) -> float:
    """Seconds for one pass over ``ops`` (median of several timed passes after warm-up)."""
    for _ in range(3):
        for op in ops:
            op()
    _sync(device)
    start = time.perf_counter()
    n = 0
    times = []
    while time.perf_counter() - start < min_seconds or n < 5:
        t0 = time.perf_counter()
        for op in ops:
            op()
        _sync(device)
        times.append(time.perf_counter() - t0)
        n += 1
    times.sort()
    return times[len(times) // 2]


def flops(ops_model: nn.Module, batch: int, image_shape, backward: bool, modules: str = "all"):
    """Floating-point operations of one pass (2 per multiply-add), from torch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(ops_model.parameters())
    with FlopCounterMode(display=False) as counter:
        if modules == "decoder":
            z = torch.zeros(batch, ops_model.latent_dim, device=param.device)
            out = ops_model.decode(z)
        else:
            x = torch.zeros(batch, *image_shape, device=param.device)
            out = ops_model.decode(ops_model.encode(x).mean)
        if backward:
            out.sum().backward()
    ops_model.zero_grad(set_to_none=True)
    return counter.get_total_flops()
