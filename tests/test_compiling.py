"""The compile-or-eager wrapper: a failing compiled function hands over to eager for good."""

import torch

from vaekit.compiling import CompiledOrEager


def test_a_failing_compiled_function_falls_back_to_eager_once_with_a_warning(capsys):
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("no C++ compiler")

    wrapped = CompiledOrEager(torch.square, "evaluating")
    wrapped.compiled = broken  # what a machine without a compiler would hit
    x = torch.tensor([1.0, -2.0, 3.0])
    assert torch.equal(wrapped(x), torch.tensor([1.0, 4.0, 9.0]))
    assert torch.equal(wrapped(x), torch.tensor([1.0, 4.0, 9.0]))
    assert len(calls) == 1 and wrapped.compiled is None  # not retried
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vaekit: torch.compile unavailable (RuntimeError); evaluating eagerly"]
