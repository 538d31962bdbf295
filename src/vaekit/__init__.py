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
    TrainConfig,
    load_config,
)
from vaekit.data import ImageData, load_dataset
from vaekit.errors import ConfigError, DataError, RunError, VaekitError
from vaekit.evaluate import evaluate_run
from vaekit.models import VAE, build_vae
from vaekit.objectives import Terms
from vaekit.train.checkpoint import load_run, read_run_config
from vaekit.train.loop import train

__all__ = [
    "VAE",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "ImageData",
    "ModelConfig",
    "ObjectiveConfig",
    "RunError",
    "Terms",
    "TrainConfig",
    "VaekitError",
    "__version__",
    "build_vae",
    "evaluate_run",
    "load_config",
    "load_dataset",
    "load_run",
    "read_run_config",
    "train",
]
