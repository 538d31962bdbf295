"""vaekit: variational autoencoders with correct probability and honest likelihoods.

The public API, re-exported names only::

    import vaekit
    config = vaekit.load_config("configs/mlp_fashion_binarized.toml")
    result = vaekit.train(config, "runs/mlp")
    model = vaekit.load_run("runs/mlp")
    images = model.sample(16)
"""

__version__ = "0.1.0"

from vaekit.config import (
    Config,
    DataConfig,
    ModelConfig,
    ObjectiveConfig,
    PriorConfig,
    QuantizerConfig,
    TrainConfig,
    load_config,
)
from vaekit.data import ImageData, load_dataset
from vaekit.errors import ConfigError, DataError, RunError, VaekitError
from vaekit.evaluate import evaluate_run
from vaekit.models import VAE, VQVAE, build_vae, build_vqvae
from vaekit.objectives import Terms, VQTerms
from vaekit.train.checkpoint import load_run, read_run_config
from vaekit.train.loop import train
from vaekit.train.prior_run import train_prior

__all__ = [
    "VAE",
    "VQVAE",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "ImageData",
    "ModelConfig",
    "ObjectiveConfig",
    "PriorConfig",
    "QuantizerConfig",
    "RunError",
    "Terms",
    "TrainConfig",
    "VQTerms",
    "VaekitError",
    "__version__",
    "build_vae",
    "build_vqvae",
    "evaluate_run",
    "load_config",
    "load_dataset",
    "load_run",
    "read_run_config",
    "train",
    "train_prior",
]
