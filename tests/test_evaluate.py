"""Evaluation: exact repeatability, the IW-NLL, test-set protocols, anomaly scores, AUROC."""

import json
import math

import pytest
import torch

import vaekit
import vaekit.evaluate as evaluate_module
from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.data import load_dataset
from vaekit.errors import ConfigError, DataError, VaekitError
from vaekit.evaluate import (
    IW_MEMORY_BUDGET,
    auroc,
    compiles_iw,
    decoder_bytes_per_sample,
    evaluate_model,
    evaluate_run,
    iw_batch_size,
    score_examples,
)
from vaekit.models import HierarchicalVAE, build_vae

RUN_DEPENDENT = {"iw_seconds", "peak_rss_mb"}  # wall time and memory vary between calls


def _stable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in RUN_DEPENDENT}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    vaekit.train(config_from_dict(tiny_raw(train={"epochs": 1})), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def model(run):
    return vaekit.load_run(run)


def test_same_seed_repeats_every_number_and_another_seed_does_not(model):
    kw = {"seed": 3, "iw_k": 20, "limit": 120}
    one = evaluate_model(model, model.config, **kw)
    two = evaluate_model(model, model.config, **kw)
    assert _stable(one) == _stable(two)  # exact, to the last digit, including iw_nll
    three = evaluate_model(model, model.config, **{**kw, "seed": 4})
    assert three["iw_nll"] != one["iw_nll"] and three["elbo"] != one["elbo"]
    assert three["diagnostics"]["mutual_information"] != one["diagnostics"]["mutual_information"]


def test_iw_nll_is_below_the_elbo_bound_and_recorded(model):
    result = evaluate_model(model, model.config, seed=0, iw_k=50, chunk_size=16, limit=200)
    assert result["examples"] == 200 and result["iw_k"] == 50 and result["chunk_size"] == 16
    assert result["binarization"] == "dynamic" and result["dataset"] == "sprites"
    assert result["elbo"] == pytest.approx(-(result["recon"] + result["kl"]), rel=1e-9)
    # The IW bound with K = 50 is tighter than the ELBO by far more than its sampling noise.
    assert result["iw_nll"] < result["nll_upper_bound"] - 1.0
    assert result["iw_seconds"] > 0 and result["peak_rss_mb"] > 0
    assert "iw_bits_per_dim" not in result and "bits_per_dim" not in result  # Bernoulli
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_elbo_is_the_same_with_and_without_importance_sampling(model):
    # Both passes see the same binarized inputs, and the ELBO has its own random stream.
    plain = evaluate_model(model, model.config, seed=2, limit=100, diagnostics=False)
    with_iw = evaluate_model(model, model.config, seed=2, limit=100, iw_k=5, diagnostics=False)
    assert with_iw["elbo"] == plain["elbo"] and "diagnostics" not in plain
    assert "iw_nll" not in plain


def test_chunk_size_does_not_change_the_iw_nll_at_a_fixed_batch_size(model):
    kw = {"seed": 1, "iw_k": 30, "limit": 60, "batch_size": 25, "diagnostics": False}
    small = evaluate_model(model, model.config, chunk_size=4, **kw)
    whole = evaluate_model(model, model.config, chunk_size=30, **kw)
    assert small["iw_nll"] == pytest.approx(whole["iw_nll"], rel=1e-6)


def test_compiling_is_chosen_from_the_number_of_importance_samples_unless_asked(model):
    big = evaluate_module.AUTO_COMPILE_SAMPLES
    assert not compiles_iw(model, 5000, big // 5000 - 1, None)  # compiling would not pay
    assert compiles_iw(model, 5000, big // 5000, None)
    assert not compiles_iw(model, 5000, big, False) and compiles_iw(model, 5, 1, True)
    hvae = HierarchicalVAE.__new__(HierarchicalVAE)  # only its type is looked at
    assert not compiles_iw(hvae, 5000, big, None)  # it does not cover a ladder VAE


def test_a_large_evaluation_compiles_by_itself_and_gets_the_eager_numbers(model, monkeypatch):
    kw = {"seed": 1, "iw_k": 40, "limit": 50, "diagnostics": False}
    eager = evaluate_model(model, model.config, **kw)
    assert eager["iw_compiled"] is False  # 2,000 samples: far below the threshold
    monkeypatch.setattr(evaluate_module, "AUTO_COMPILE_SAMPLES", 40 * 50)
    auto = evaluate_model(model, model.config, **kw)
    assert auto["iw_compiled"] is True  # a machine without a C++ compiler would fail here
    assert auto["iw_nll"] == pytest.approx(eager["iw_nll"], abs=1e-3)
    assert auto["elbo"] == eager["elbo"]


def test_scores_average_to_the_evaluation_figures(model):
    config = model.config
    data = load_dataset(config.data, "test")
    data = data.subset(torch.arange(80))
    result = evaluate_model(model, config, seed=7, iw_k=10, limit=80, diagnostics=False)
    neg_elbo = score_examples(model, config, data, iw_k=None, seed=7)
    nll = score_examples(model, config, data, iw_k=10, seed=7)
    assert neg_elbo.shape == nll.shape == (80,) and nll.dtype == torch.float64
    assert neg_elbo.mean().item() == pytest.approx(-result["elbo"], rel=1e-12)
    assert nll.mean().item() == pytest.approx(result["iw_nll"], rel=1e-12)


def test_static_and_dynamic_protocols_differ_and_are_recorded(model):
    dynamic = evaluate_model(model, model.config, seed=0, limit=100, binarization="dynamic")
    static = evaluate_model(model, model.config, seed=0, limit=100, binarization="static")
    assert static["binarization"] == "static" and dynamic["binarization"] == "dynamic"
    assert static["elbo"] != dynamic["elbo"]
    # "static" is the dataset's own binarization, the one load_dataset gives.
    cfg = model.config.data.model_copy(update={"binarize": "static"})
    data = load_dataset(cfg, "test").subset(torch.arange(100))
    scores = score_examples(model, model.config, data, iw_k=None, seed=0, binarization="static")
    assert scores.mean().item() == pytest.approx(-static["elbo"], rel=1e-12)


def test_binarization_is_rejected_for_non_bernoulli_likelihoods():
    config = config_from_dict(tiny_raw(data={"binarize": "none"}, model={"likelihood": "gaussian"}))
    model = build_vae(config.model, (1, 28, 28))
    with pytest.raises(ConfigError, match="Bernoulli") as err:
        evaluate_model(model, config, binarization="dynamic", limit=10)
    assert isinstance(err.value, VaekitError) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="binarization must be one of"):
        evaluate_model(model, config, binarization="sometimes", limit=10)


def test_eight_bit_likelihood_reports_iw_bits_per_dim():
    config = config_from_dict(
        tiny_raw(data={"binarize": "none"}, model={"likelihood": "discretized_logistic"})
    )
    torch.manual_seed(0)
    model = build_vae(config.model, (1, 28, 28))
    result = evaluate_model(model, config, iw_k=4, limit=20, diagnostics=False)
    assert result["iw_bits_per_dim"] == pytest.approx(
        result["iw_nll"] / (784 * math.log(2)), rel=1e-12
    )
    assert result["iw_bits_per_dim"] <= result["bits_per_dim"] + 0.01


def test_score_rejects_images_of_another_shape(model):
    other = vaekit.ImageData(torch.zeros(3, 1, 32, 32, dtype=torch.uint8), None, None, "big")
    with pytest.raises(DataError, match=r"1x32x32.*1x28x28"):
        score_examples(model, model.config, other, iw_k=None, seed=0)


def test_iw_batch_size_keeps_one_step_within_the_memory_budget(model):
    per_sample = decoder_bytes_per_sample(model)
    # At least the decoder output itself, 4 bytes per float.
    assert per_sample >= 4 * math.prod(model.image_shape)
    large = iw_batch_size(model, 5000, 100, cap=10_000)
    assert 100 * large * per_sample <= IW_MEMORY_BUDGET
    assert iw_batch_size(model, 5000, 1000, cap=10_000) < large
    assert iw_batch_size(model, 1, 100, cap=500) == 500  # K = 1: the chunk is one sample


def test_evaluate_run_writes_eval_json_with_the_new_options(run):
    result = evaluate_run(run, seed=5, iw_k=3, chunk_size=2, limit=30, binarization="static")
    written = json.loads((run / "eval.json").read_text())
    assert written == result
    for key in ("iw_nll", "iw_k", "chunk_size", "diagnostics", "binarization", "elbo"):
        assert key in written
    assert written["binarization"] == "static" and written["examples"] == 30
    assert written["device"] == "cpu" or torch.cuda.is_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_evaluating_on_cuda_without_a_gpu_is_refused_before_anything_is_written(run):
    before = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    with pytest.raises(ConfigError, match="--device: 'cuda', but torch sees no CUDA device"):
        evaluate_run(run, device="cuda", limit=10)
    after = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    assert after == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_evaluation_agrees_with_the_cpu_one(run):
    kw = {"seed": 2, "iw_k": 200, "limit": 300}
    cpu = evaluate_run(run, device="cpu", **kw)
    gpu = evaluate_run(run, device="cuda", **kw)
    assert (cpu["device"], gpu["device"]) == ("cpu", "cuda")
    # The same test images; the posterior samples come from the GPU's own random stream, so
    # the Monte Carlo figures agree to within their sampling noise, not to the digit. On the
    # CPU, two noise seeds on these 300 images give ELBO means whose difference has a standard
    # deviation of 1.4 nats, and K = 200 IW-NLLs that spread by 0.2 over four seeds: the
    # tolerances are about five of those. (A first GPU run differed by 1.38 in the ELBO.)
    assert gpu["examples"] == cpu["examples"] == 300
    assert gpu["elbo"] == pytest.approx(cpu["elbo"], abs=7.0)
    assert gpu["iw_nll"] == pytest.approx(cpu["iw_nll"], abs=0.5)
    assert gpu["iw_nll"] < gpu["nll_upper_bound"]
    # The diagnostics run on a CPU copy of the model: the same numbers.
    assert gpu["diagnostics"]["kl_per_dim"] == pytest.approx(cpu["diagnostics"]["kl_per_dim"])
    assert gpu["diagnostics"]["active_units"] == cpu["diagnostics"]["active_units"]


def test_auroc_known_cases():
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0])) == 1.0
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert auroc(torch.tensor([2.0, 2.0, 2.0]), torch.tensor([2.0, 2.0])) == 0.5
    same = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert auroc(same, same.clone()) == 0.5
    with pytest.raises(ValueError):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_auroc_equals_a_brute_force_pairwise_count():
    g = torch.Generator().manual_seed(1)
    scores_in = torch.randint(0, 12, (73,), generator=g).double()  # many ties
    scores_out = torch.randint(3, 15, (41,), generator=g).double()
    wins = sum(
        1.0 if o > i else 0.5 if o == i else 0.0
        for i in scores_in.tolist()
        for o in scores_out.tolist()
    )
    assert auroc(scores_in, scores_out) == pytest.approx(wins / (73 * 41), rel=1e-12)
