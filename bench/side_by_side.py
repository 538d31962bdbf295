"""Two variants of one measurement, interleaved over repeats: medians, spreads and the ratio.

Interleaving puts both variants under the same load of a shared, noisy machine; the ratio is
taken per repeat, so a slow stretch of the machine cancels out of it.
"""

import statistics
from collections.abc import Callable


def compare(
    first: tuple[str, Callable[[], float]],
    second: tuple[str, Callable[[], float]],
    unit: str,
    repeats: int = 5,
) -> list[float]:
    """Call each measurement ``repeats`` times, alternately; print both and second / first.

    Returns the per-repeat ratios second / first.
    """
    (name_a, measure_a), (name_b, measure_b) = first, second
    a, b = [], []
    for _ in range(repeats):
        a.append(measure_a())
        b.append(measure_b())
    for name, values in ((name_a, a), (name_b, b)):
        spread = f"{min(values):,.1f}-{max(values):,.1f}"
        print(f"{name}: {statistics.median(values):,.1f} {unit} ({spread})")
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(
        f"{name_b} / {name_a}: {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f})"
    )
    return ratios
