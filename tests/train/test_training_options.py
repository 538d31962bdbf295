"""Training options the recipes use: learning-rate warm-up, gradient clipping, weight EMA."""

import json
import math
import shutil

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.data import load_dataset, to_model_input
from vaekit.errors import ConfigError, RunError
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import (
    EVAL_SEED_OFFSET,
    CompiledELBO,
    _budget_horizon,
    _load_scheduler,
    _make_scheduler,
    make_ema,
    make_optimizer,
    resolve_config,
    train,
    train_step,
    update_ema,
    validate,
)


def _lrs(raw_train: dict, total: int) -> list[float]:
    config = config_from_dict(tiny_raw(train=raw_train))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.train.lr)
    scheduler = _make_scheduler(optimizer, config, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_warmup_rises_linearly_to_the_learning_rate_then_holds():
    lrs = _lrs({"lr": 0.01, "lr_warmup_steps": 4}, 10)
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert lrs[4:] == pytest.approx([0.01] * 6)


def test_warmup_then_cosine_decays_to_zero_over_training():
    total = 100
    lrs = _lrs({"lr": 1.0, "lr_warmup_steps": 10, "lr_schedule": "cosine"}, total)
    assert lrs[0] == pytest.approx(0.1)  # a tenth of the way up, cosine still ~1
    assert lrs[50] == pytest.approx(0.5)  # half-way through training: cos(pi / 2)
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    peak = max(range(total), key=lrs.__getitem__)
    assert 8 <= peak <= 10  # the rise ends where the warm-up does


def test_the_budget_horizon_is_the_epochs_that_fit_at_the_mean_epoch_time():
    # 3 epochs in 30 s: 10 fit in 100 s; 7 were done before this process resumed the run.
    assert _budget_horizon(3, 30.0, 0, 100.0, steps_per_epoch=5) == 50
    assert _budget_horizon(3, 30.0, 7, 100.0, steps_per_epoch=5) == 85
    assert _budget_horizon(3, 30.0, 0, 95.0, steps_per_epoch=5) == 45  # 9.5 fit: 9 whole
    # Already past the budget (the loop stops now): the horizon is where the run is.
    assert _budget_horizon(4, 120.0, 0, 100.0, steps_per_epoch=5) == 20


def test_a_cosine_under_a_time_budget_decays_to_zero_when_the_budget_ends(tmp_path):
    # 10,000 epochs would keep a cosine over the epochs at its peak; the 2 s budget stops the
    # run after a few, and the decay is fitted to those. The horizon is the epochs that fit
    # at the mean epoch time, the rule the run stops by: the last epoch ends at a rate of 0.
    train_raw = {"epochs": 10_000, "lr": 1e-3, "lr_schedule": "cosine", "max_minutes": 2 / 60}
    train(config_from_dict(tiny_raw(train=train_raw)), tmp_path / "run")
    records = [
        json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS_FILE).read_text().splitlines()
    ]
    assert 2 <= len(records) < 10_000
    assert records[0]["lr"] > 0.99e-3  # after one epoch of 10,000 the cosine has not moved
    assert records[-1]["lr"] < 1e-9


def test_resume_keeps_the_step_but_takes_the_schedule_from_the_new_config():
    def scheduler(epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
        config = config_from_dict(tiny_raw(train={"lr": 1.0, "lr_schedule": "cosine"}))
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return _make_scheduler(optimizer, config, epochs * 10)

    first = scheduler(epochs=2)
    for _ in range(15):
        first.optimizer.step()
        first.step()
    first.lr_lambdas[0].horizon = 16  # as a time budget would have left it
    raised = scheduler(epochs=4)  # resumed with train.epochs raised from 2 to 4
    _load_scheduler(raised, first.state_dict())
    assert raised.last_epoch == 15
    assert raised.lr_lambdas[0].horizon == 40
    raised.optimizer.step()
    raised.step()
    assert raised.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 16 / 40)))

    # A checkpoint from before the schedule was a LambdaLR: torch's CosineAnnealingLR.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    old = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20)
    for _ in range(5):
        optimizer.step()
        old.step()
    resumed = scheduler(epochs=2)
    _load_scheduler(resumed, old.state_dict())
    for _ in range(10):  # the rest of the 20 steps: the same rates as torch's own
        resumed.optimizer.step()
        resumed.step()
        old.optimizer.step()
        old.step()
        assert resumed.get_last_lr()[0] == pytest.approx(old.get_last_lr()[0], abs=1e-12)


def test_grad_clip_scales_the_gradient_to_the_norm_limit(tiny_config):
    config = config_from_dict(tiny_raw(train={"grad_clip": 0.05}))
    data = load_dataset(config.data, "train")
    resolved = resolve_config(config, data)
    x = to_model_input(data.images[:64], binarize="none", dequantize=False)

    def gradients(clip: float | None) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = ckpt.build_model(resolved)
        cfg = resolved.model_copy(deep=True)
        cfg.train.grad_clip = clip
        torch.manual_seed(1)
        train_step(model, make_optimizer(model, cfg), x, cfg, kl_scale=1.0)
        return [p.grad.clone() for p in model.parameters()]

    raw, clipped = gradients(None), gradients(0.05)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw]))
    assert norm > 0.05  # the limit binds
    for g_raw, g_clipped in zip(raw, clipped, strict=True):
        assert torch.allclose(g_clipped, g_raw * (0.05 / norm), rtol=1e-4, atol=1e-9)


def test_update_ema_follows_the_moving_average_recurrence():
    model = torch.nn.Linear(3, 2)
    ema = make_ema(model, 0.9)
    expected = None
    for step in range(5):
        with torch.no_grad():
            model.weight.add_(float(step + 1))
        update_ema(ema, model)
        current = model.weight.detach().clone()
        expected = current if expected is None else 0.9 * expected + 0.1 * current
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)


def test_ema_weights_are_what_validation_and_load_run_see_and_resume_exactly(tmp_path):
    raw = tiny_raw(train={"epochs": 2, "ema_decay": 0.95, "lr_warmup_steps": 25})
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(config_from_dict(raw), straight)
    first = tiny_raw(train={"epochs": 1, "ema_decay": 0.95, "lr_warmup_steps": 25})
    train(config_from_dict(first), run)  # the warm-up (25 steps) spans the two epochs
    resumed_config = config_from_dict(raw)
    train(resumed_config, run, resume=True)

    loaded = ckpt.load_run(straight)
    state = ckpt.load_state(straight)
    raw_weights = load_file(straight / ckpt.WEIGHTS_FILE)
    averaged = ckpt.ema_weights(state.ema)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, averaged[name])
    assert any(not torch.equal(raw_weights[k], averaged[k]) for k in raw_weights)

    # The epoch's validation numbers are those of the averaged weights.
    config = ckpt.read_run_config(straight)
    val = validate(
        loaded, load_dataset(config.data, "val"), config, config.train.seed + EVAL_SEED_OFFSET
    )
    last = json.loads((straight / ckpt.METRICS_FILE).read_text().splitlines()[-1])
    assert last["val/elbo"] == pytest.approx(val["elbo"], rel=1e-6)

    # Stopping after an epoch and resuming gives the same weights and the same average.
    for name, value in ckpt.load_run(run).state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    assert load_file(run / ckpt.WEIGHTS_FILE).keys() == raw_weights.keys()
    for k in raw_weights:
        assert torch.equal(load_file(run / ckpt.WEIGHTS_FILE)[k], raw_weights[k]), k


def test_ema_decay_and_warmup_must_be_in_range():
    for bad in ({"ema_decay": 1.0}, {"ema_decay": 0.0}, {"lr_warmup_steps": -1}):
        with pytest.raises(ConfigError):
            config_from_dict(tiny_raw(train=bad))


def test_validation_iw_bound_lies_between_the_elbo_and_a_larger_k_bound(tmp_path):
    config = config_from_dict(tiny_raw(train={"epochs": 1, "val_iw_samples": 20}))
    train(config, tmp_path / "run")
    last = json.loads((tmp_path / "run" / ckpt.METRICS_FILE).read_text().splitlines()[-1])
    model = ckpt.load_run(tmp_path / "run")
    run_config = ckpt.read_run_config(tmp_path / "run")
    val_data = load_dataset(run_config.data, "val")
    seed = run_config.train.seed + EVAL_SEED_OFFSET
    again = validate(model, val_data, run_config, seed, iw_samples=20)
    larger = validate(model, val_data, run_config, seed, iw_samples=200)
    assert last["val/iw_bound"] == pytest.approx(again["iw_bound"], rel=1e-6)
    # The IW bound of K samples rises with K, from the ELBO (K = 1) towards log p(x).
    assert last["val/elbo"] < last["val/iw_bound"] < larger["iw_bound"]


def test_early_stopping_stops_keeps_the_best_epoch_and_refuses_to_resume(tmp_path):
    # A learning rate far too high: the bound stops improving after the first epochs.
    raw = tiny_raw(train={"epochs": 30, "lr": 0.5, "early_stopping_patience": 2})
    run = tmp_path / "run"
    result = train(config_from_dict(raw), run)
    records = [json.loads(line) for line in (run / ckpt.METRICS_FILE).read_text().splitlines()]
    assert result.epochs == len(records) < 30
    best = max(records, key=lambda r: r["val/elbo"])
    assert records[-1]["best_epoch"] == best["epoch"]
    assert records[-1]["epoch"] == best["epoch"] + 2  # patience 2: two epochs without a gain
    config = ckpt.read_run_config(run)
    again = validate(
        ckpt.load_run(run),  # best.safetensors: the weights of the best epoch
        load_dataset(config.data, "val"),
        config,
        config.train.seed + EVAL_SEED_OFFSET,
    )
    assert again["elbo"] == pytest.approx(best["val/elbo"], rel=1e-6)
    with pytest.raises(RunError, match="stopped early"):
        train(config_from_dict(raw), run, resume=True)


def test_max_minutes_stops_before_an_epoch_that_would_pass_the_budget(tmp_path):
    # About 0.1 s per epoch here: a 0.5 s budget stops after a handful of the 200 epochs.
    config = config_from_dict(tiny_raw(train={"epochs": 200, "max_minutes": 0.5 / 60}))
    console = Console(record=True, width=200)
    result = train(config, tmp_path / "run", console=console)
    records = (tmp_path / "run" / ckpt.METRICS_FILE).read_text().splitlines()
    assert 1 <= result.epochs == len(records) < 200
    assert (
        f"stopping after epoch {result.epochs}: another epoch would pass" in console.export_text()
    )


def test_compiled_elbo_step_gives_the_eager_loss_and_gradients():
    # Inductor's eager-matching random numbers make both steps draw the same z; what is left
    # to differ is the fused arithmetic, which must agree to rounding.
    import torch._inductor.config as inductor_config

    config = config_from_dict(
        tiny_raw(
            model={"prior": "vamp", "prior_components": 8},
            objective={"estimator": "iwae", "iw_samples": 3},
        )
    )
    data = load_dataset(config.data, "train")
    cfg = resolve_config(config, data)
    x = to_model_input(data.images[:32], binarize="none", dequantize=False)

    def step(compiled: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = ckpt.build_model(cfg)
        forward = CompiledELBO(model) if compiled else None
        torch.manual_seed(1)
        result = train_step(
            model, make_optimizer(model, cfg), x, cfg, kl_scale=0.7, forward=forward
        )
        if forward is not None and (shutil.which("c++") or shutil.which("g++")):
            assert forward.compiled is not None  # with a compiler it compiled: no fallback
        return result.loss.detach(), [p.grad.clone() for p in model.parameters()]

    with inductor_config.patch(fallback_random=True):
        eager_loss, eager_grads = step(False)
        compiled_loss, compiled_grads = step(True)
    assert torch.allclose(compiled_loss, eager_loss, rtol=1e-5)
    assert len(compiled_grads) == len(eager_grads)
    for g_compiled, g_eager in zip(compiled_grads, eager_grads, strict=True):
        assert torch.allclose(g_compiled, g_eager, rtol=1e-3, atol=1e-5)


def test_compiled_elbo_runs_a_batch_of_another_size_eagerly():
    # The epoch's smaller last batch must not trigger a second compile for its shape.
    config = config_from_dict(tiny_raw())
    cfg = resolve_config(config, load_dataset(config.data, "train"))
    forward = CompiledELBO(ckpt.build_model(cfg))
    calls: list[tuple[str, int]] = []
    forward.compiled = lambda x, *rest: calls.append(("compiled", len(x)))
    forward.eager = lambda x, *rest: calls.append(("eager", len(x)))
    for rows in (8, 8, 5, 8):
        forward(torch.zeros(rows, *cfg.image_shape), cfg.objective, False)
    assert calls == [("compiled", 8), ("compiled", 8), ("eager", 5), ("compiled", 8)]


def test_train_compile_is_refused_under_torchrun():
    from vaekit.distributed import World
    from vaekit.train.loop import _check_world

    cfg = config_from_dict(tiny_raw(train={"compile": True}))
    _check_world(World(), cfg, 100)  # one process: allowed
    with pytest.raises(ConfigError, match=r"train\.compile"):
        _check_world(World(rank=0, world_size=2, backend="gloo"), cfg, 100)
