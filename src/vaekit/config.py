"""Typed run configuration: pydantic models, TOML files and dotted command-line overrides.

A config has the sections ``[data]``, ``[model]`` (with ``[model.quantizer]`` for a VQ-VAE),
``[objective]``, ``[train]`` and ``[prior]`` (the VQ-VAE's prior over codes).
Every section forbids unknown keys, so a typo is an error naming the key and the file
instead of a silently ignored setting.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vaekit.errors import ConfigError

Binarize = Literal["none", "static", "dynamic"]
Likelihood = Literal[
    "bernoulli", "gaussian", "gaussian_learned", "gaussian_predicted", "discretized_logistic"
]


class _Section(BaseModel):
    # allow_inf_nan=False: TOML's inf and nan are no sizes, rates or weights (lr = inf trains
    # a NaN model rather than failing), so they are errors naming the key.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Which images to train on and how each batch turns uint8 pixels into model input."""

    name: str | None = Field(
        default="auto",
        description='catalog dataset ("fashion-mnist", "mnist", "sprites"); "auto" picks '
        "fashion-mnist when installed, else sprites",
    )
    path: Path | None = Field(
        default=None, description="a user's .npz/.npy file, image folder or IDX folder"
    )
    image_size: int | None = Field(
        default=None, gt=0, description="resize user images (and size sprites) to this"
    )
    channels: Literal[1, 3] | None = Field(default=None, description="1 = grey, 3 = RGB")
    binarize: Binarize = Field(
        default="none", description="static: sampled once with a seed; dynamic: every batch"
    )
    dequantize: bool = Field(default=False, description="uniform dequantization (x + u) / 256")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(
        default=0.1,
        gt=0.0,
        lt=0.5,
        description="held out of a user dataset, which has no test split",
    )
    split_seed: int = 0
    limit: int | None = Field(default=None, gt=0, description="use only this many train images")
    sprites_count: int = Field(default=24000, gt=0, description="sprites generated for training")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path is not None and self.name not in (None, "auto"):
            raise ValueError("set either data.name or data.path, not both")
        if self.path is not None:
            self.__dict__["name"] = None
        if self.name is None and self.path is None:
            raise ValueError("set data.name (a catalog dataset) or data.path (your own files)")
        return self


class QuantizerConfig(_Section):
    """The VQ-VAE codebook: its size, how it learns, and how it stays in use."""

    num_codes: int = Field(default=512, gt=1, description="K, the number of codebook vectors")
    code_dim: int = Field(default=64, gt=0, description="D, the size of each code vector")
    update: Literal["ema", "loss"] = Field(
        default="ema",
        description="ema: codes move to running means of their vectors; "
        "loss: codes learn by the codebook loss ||sg(z_e) - z_q||^2",
    )
    ema_decay: float = Field(default=0.99, gt=0.0, lt=1.0)
    ema_epsilon: float = Field(
        default=1e-5, gt=0.0, description="Laplace smoothing of the EMA code counts"
    )
    dead_code_steps: int = Field(
        default=20,
        ge=0,
        description="re-initialise a code unused for this many training steps from encoder "
        "outputs; 0 never does",
    )
    kmeans_init: bool = Field(
        default=True, description="start the codebook from k-means on the first batch's vectors"
    )
    kmeans_iters: int = Field(default=10, gt=0)


class ModelConfig(_Section):
    """The networks, the latent space and the likelihood p(x|z)."""

    kind: Literal["vae", "vqvae", "hvae"] = Field(
        default="vae",
        description="vae: Gaussian latents; vqvae: a map of discrete codes; hvae: a ladder of "
        "Gaussian latent layers with top-down inference (Sønderby et al. 2016)",
    )
    arch: Literal["mlp", "gated_mlp", "conv", "resnet_vae", "resnet"] = Field(
        default="conv",
        description="mlp; gated_mlp: gated linear units (Dauphin et al. 2017), as in the "
        "VampPrior paper; conv; resnet_vae: strided convs with pre-activation residual blocks "
        "(residual_blocks per resolution); resnet: the VQ-VAE's nets",
    )
    latent_dim: int = Field(default=16, gt=0)
    hidden: list[int] = Field(default=[512, 256], description="MLP hidden widths (encoder order)")
    decoder_hidden: list[int] = Field(
        default=[],
        description="mlp and gated_mlp: the decoder's hidden widths from z outward (default: "
        "model.hidden reversed); lets the decoder, which an importance-weighted bound runs "
        "once per sample, differ from the encoder",
    )
    channels: list[int] = Field(
        default=[32, 64], description="conv channels, one stride-2 layer each"
    )
    activation: Literal["relu", "elu", "silu", "gelu"] = "relu"
    batchnorm: bool = False
    likelihood: Likelihood = "bernoulli"
    gaussian_scale: float = Field(default=0.1, gt=0.0, description="fixed sigma of 'gaussian'")
    learned_scale: Literal["global", "pixel"] = Field(
        default="global", description="one learned sigma, or one per pixel"
    )
    pixel_autoregression: Literal["none", "linear"] = Field(
        default="none",
        description="bernoulli only; linear: each pixel's logit also gets a learned linear "
        "function of the pixels before it in raster order (a fully visible sigmoid belief "
        "net on top of the decoder); pictures then decode pixel by pixel",
    )
    hidden_channels: int = Field(default=64, gt=0, description="resnet: width of the feature maps")
    residual_blocks: int = Field(default=2, ge=0, description="resnet: blocks at each end")
    residual_channels: int = Field(default=32, gt=0, description="resnet: width inside a block")
    prior: Literal["standard_normal", "mog", "vamp"] = Field(
        default="standard_normal",
        description="vae: p(z); standard_normal: N(0, I); mog: a learned mixture of diagonal "
        "Gaussians; vamp: the VampPrior, a mixture of the encoder's posteriors at learned "
        "pseudo-inputs (Tomczak & Welling 2018); mog and vamp need objective.estimator "
        "other than 'analytic', and their free bits floor each chain-rule term "
        "KL(q(z_d|x) || p(z_d | z_<d)) of the KL",
    )
    prior_components: int = Field(
        default=500,
        gt=0,
        description="K, the mixture components of model.prior = 'mog' or 'vamp' (vamp: the "
        "number of pseudo-inputs, 500 in Tomczak & Welling 2018)",
    )
    latent_dims: list[int] = Field(
        default=[32, 16],
        description="hvae: the size of each latent layer, bottom (next to x) first; "
        "model.latent_dim is unused",
    )
    ladder_width: int = Field(
        default=256, gt=0, description="hvae: width of the deterministic ladder between layers"
    )
    posterior: Literal["gaussian", "iaf"] = Field(
        default="gaussian",
        description="vae: q(z|x); gaussian: diagonal; iaf: a diagonal Gaussian made richer by "
        "iaf_steps inverse autoregressive flow steps (Kingma et al. 2016)",
    )
    iaf_steps: int = Field(default=2, gt=0, description="iaf: flow steps")
    iaf_hidden: list[int] = Field(
        default=[], description="iaf: widths of each step's masked network (default: two of 2D)"
    )
    iaf_context: int = Field(
        default=32, ge=0, description="iaf: size of the context h the encoder gives the flow"
    )
    quantizer: QuantizerConfig = QuantizerConfig()

    @model_validator(mode="after")
    def _positive_sizes(self) -> ModelConfig:
        for key in ("hidden", "channels", "decoder_hidden"):
            sizes = getattr(self, key)
            if any(s <= 0 for s in sizes):
                raise ValueError(f"model.{key} must hold positive sizes, got {sizes}")
        if self.decoder_hidden and self.arch not in ("mlp", "gated_mlp"):
            raise ValueError(
                f"model.decoder_hidden is for arch 'mlp' or 'gated_mlp', not {self.arch!r}"
            )
        if self.arch in ("conv", "resnet_vae") and not self.channels:
            raise ValueError("model.channels must list at least one conv layer")
        if self.kind == "hvae":
            if not self.latent_dims or any(d <= 0 for d in self.latent_dims):
                raise ValueError(
                    f"model.latent_dims must list positive sizes, got {self.latent_dims}"
                )
            if self.arch not in ("mlp", "gated_mlp", "conv") or self.posterior != "gaussian":
                raise ValueError(
                    "model.kind = 'hvae' takes model.arch 'mlp', 'gated_mlp' or 'conv' and the "
                    "Gaussian posterior of its ladder"
                )
        if self.pixel_autoregression != "none" and self.likelihood != "bernoulli":
            raise ValueError(
                "model.pixel_autoregression is for model.likelihood = 'bernoulli', not "
                f"{self.likelihood!r}"
            )
        if self.kind == "vqvae" and self.posterior != "gaussian":
            raise ValueError("model.posterior is the Gaussian VAE's q(z|x), not a VQ-VAE's")
        if (self.kind == "vqvae") != (self.arch == "resnet"):
            raise ValueError(
                "model.kind = 'vqvae' goes with model.arch = 'resnet' (and resnet is for vqvae "
                f"only so far); got kind {self.kind!r} with arch {self.arch!r}"
            )
        if self.kind == "vqvae" and self.prior != "standard_normal":
            raise ValueError(
                "model.prior is the Gaussian VAE's p(z); a VQ-VAE's prior over codes is set in "
                "[prior] and fit by `vaekit train-prior`"
            )
        return self


class ObjectiveConfig(_Section):
    """How per-example ELBO terms become the scalar that training minimises."""

    estimator: Literal["analytic", "monte_carlo", "iwae", "dreg"] = Field(
        default="analytic",
        description="analytic KL; monte_carlo: log p(z) - log q(z|x) at one sample; iwae: the "
        "importance-weighted bound with iw_samples samples (Burda et al. 2016); dreg: that bound "
        "with doubly reparameterized encoder gradients (Tucker et al. 2018)",
    )
    iw_samples: int = Field(
        default=5, ge=1, description="iwae, dreg: importance samples K per image and step"
    )
    beta: float = Field(default=1.0, ge=0.0, description="weight of the KL term (beta-VAE)")
    warmup: Literal["none", "linear", "cyclical"] = "none"
    warmup_steps: int = Field(default=0, ge=0, description="linear: steps from 0 to beta")
    cycles: int = Field(default=4, gt=0, description="cyclical: number of cycles over training")
    cycle_ratio: float = Field(
        default=0.5, gt=0.0, le=1.0, description="cyclical: part of a cycle spent rising"
    )
    free_bits: float = Field(
        default=0.0, ge=0.0, description="lambda: floor on each latent's batch-mean KL, in nats"
    )
    commitment: float = Field(
        default=0.25,
        ge=0.0,
        description="vqvae: weight beta of the commitment term ||z_e - sg(z_q)||^2",
    )

    @model_validator(mode="after")
    def _warmup_length(self) -> ObjectiveConfig:
        if self.warmup == "linear" and self.warmup_steps == 0:
            raise ValueError("objective.warmup = 'linear' needs objective.warmup_steps > 0")
        return self

    @model_validator(mode="after")
    def _importance_weighted(self) -> ObjectiveConfig:
        iw = self.estimator in ("iwae", "dreg")
        if iw and self.free_bits > 0:
            raise ValueError(
                f"objective.free_bits floors each latent's KL, a term the importance-weighted "
                f"bound (objective.estimator = {self.estimator!r}) does not have; set it to 0"
            )
        if self.estimator == "dreg" and (self.beta != 1.0 or self.warmup != "none"):
            raise ValueError(
                "objective.estimator = 'dreg': its gradient is derived for the untempered bound; "
                "set objective.beta = 1 and objective.warmup = 'none' (or use 'iwae', where they "
                "temper log p(z) - log q(z|x) in the weights)"
            )
        return self


class TrainConfig(_Section):
    """Optimisation, logging and reproducibility."""

    epochs: int = Field(default=10, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="cosine: decays to 0 at the end of train.epochs, or of train.max_minutes "
        "when that is set (fitted after each epoch to the epochs the budget leaves room for)",
    )
    grad_clip: float | None = Field(default=None, gt=0.0, description="max global grad norm")
    seed: int = 0
    eval_batch_size: int = Field(default=500, gt=0)
    num_threads: int | None = Field(default=None, gt=0, description="torch threads; default all")
    picture_count: int = Field(default=64, gt=0, description="images in per-epoch grids")
    progress: bool = True
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="bf16: the networks' products run under bfloat16 autocast; "
        "probabilities and the loss stay float32",
    )
    compile: bool = Field(
        default=False,
        description="run the training ELBO through torch.compile (1.22x samples/s for "
        "fmnist-vamp-iwae on 2 CPU cores, none for the plain mlp; bench/trials.py "
        "compile-elbo); needs a C++ compiler, else eager; one process only, not under torchrun",
    )
    checkpoint_every: int = Field(
        default=0,
        ge=0,
        description="also checkpoint every this many steps (0: only at the end of each epoch)",
    )
    keep_checkpoints: int = Field(
        default=2, ge=1, description="checkpoints kept; older ones are deleted"
    )
    max_bad_steps: int = Field(
        default=5,
        gt=0,
        description="consecutive steps with a NaN/Inf loss or gradient before the run restores "
        "its last good checkpoint with a lower learning rate",
    )
    bad_step_lr_factor: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="learning-rate factor applied on each restore"
    )
    max_restores: int = Field(
        default=3, ge=0, description="restores after which a diverging run stops"
    )
    lr_warmup_steps: int = Field(
        default=0,
        ge=0,
        description="steps over which the learning rate rises linearly from 0 to train.lr, "
        "before train.lr_schedule applies",
    )
    ema_decay: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="keep an exponential moving average of the weights with this decay (e.g. "
        "0.999); validation, pictures and every command that loads the run use it",
    )
    val_iw_samples: int = Field(
        default=0,
        ge=0,
        description="also report the validation importance-weighted bound (val/iw_bound) with "
        "this many samples per image each epoch (0: off; a VAE only)",
    )
    max_minutes: float | None = Field(
        default=None,
        gt=0.0,
        description="a wall-clock budget: no epoch starts that would end past it (the "
        "quality benchmark trains each recipe for a stated time)",
    )
    early_stopping_patience: int | None = Field(
        default=None,
        gt=0,
        description="stop when the validation bound (val/iw_bound if train.val_iw_samples, "
        "else val/elbo) has not improved for this many epochs; the best weights are kept in "
        "best.safetensors and are what commands load",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="where training runs; auto: the GPU when CUDA is present, else the CPU",
    )
    dist_timeout: float = Field(
        default=600.0,
        gt=0.0,
        description="seconds a process of a torchrun job waits for its peers before it fails",
    )


class PriorConfig(_Section):
    """The autoregressive prior over a VQ-VAE's code maps, fit by ``vaekit train-prior``."""

    dim: int = Field(default=128, gt=0, description="transformer width")
    layers: int = Field(default=4, gt=0)
    heads: int = Field(default=4, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    epochs: int = Field(default=20, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _heads_divide(self) -> PriorConfig:
        if self.dim % self.heads:
            raise ValueError(
                f"prior.dim ({self.dim}) must be divisible by prior.heads ({self.heads})"
            )
        return self


class Config(_Section):
    """A whole run: what a ``config.toml`` holds."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainConfig = TrainConfig()
    prior: PriorConfig = Field(
        default=PriorConfig(), description="vqvae only: the learned prior over codes"
    )
    image_shape: list[int] | None = Field(
        default=None, description="[C, H, W], filled in when the data is loaded"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        eight_bit = self.model.likelihood == "discretized_logistic"
        if eight_bit and (self.data.binarize != "none" or self.data.dequantize):
            raise ValueError(
                "model.likelihood = 'discretized_logistic' models the 8-bit pixels "
                "themselves: set data.binarize = 'none' and data.dequantize = false"
            )
        if self.data.binarize != "none" and self.data.dequantize:
            raise ValueError("data.binarize and data.dequantize exclude each other")
        if self.model.likelihood != "bernoulli" and self.data.binarize != "none":
            raise ValueError("data.binarize is for model.likelihood = 'bernoulli'")
        if self.model.kind == "vqvae" and self.train.val_iw_samples:
            raise ValueError(
                "train.val_iw_samples: a VQ-VAE has no importance-weighted bound; set it to 0"
            )
        if self.model.kind == "vqvae" and self.objective.estimator in ("iwae", "dreg"):
            raise ValueError(
                f"objective.estimator = {self.objective.estimator!r}: a VQ-VAE's q(z|x) is "
                "one-hot, so importance weighting adds nothing; leave it at 'analytic'"
            )
        if self.image_shape is not None:
            check_image_shape(self.model, self.image_shape)
        return self

    @model_validator(mode="after")
    def _prior_has_estimator(self) -> Config:
        # The analytic estimator is KL(q || N(0, I)) in closed form; a mixture prior has none
        # (Hershey & Olsen 2007), so its KL must be estimated by sampling.
        if self.model.prior != "standard_normal" and self.objective.estimator == "analytic":
            raise ValueError(
                f"model.prior = {self.model.prior!r} has no closed-form KL: set "
                "objective.estimator = 'monte_carlo', 'iwae' or 'dreg'"
            )
        if self.model.kind == "hvae" and self.objective.estimator == "dreg":
            raise ValueError(
                "objective.estimator = 'dreg' splits encoder and decoder gradients, but the "
                "ladder's posterior shares the generative top-down nets: use 'iwae'"
            )
        if self.model.posterior == "iaf" and self.objective.estimator in ("analytic", "dreg"):
            raise ValueError(
                "model.posterior = 'iaf' has no closed-form KL, and DReG needs the posterior's "
                "density at stopped parameters, which a flow does not give cheaply: set "
                "objective.estimator = 'monte_carlo' or 'iwae'"
            )
        return self


def check_image_shape(model: ModelConfig, shape: list[int]) -> None:
    """Raise ValueError when the conv net cannot map images of ``shape`` to and fro."""
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"image_shape must be [C, H, W] with positive sizes, got {shape}")
    if model.arch in ("mlp", "gated_mlp"):
        return
    _, height, width = shape
    factor = 4 if model.arch == "resnet" else 2 ** len(model.channels)
    if model.arch == "resnet" and (height % factor or width % factor):
        raise ValueError(
            f"the resnet downsamples by 4, so the image size must be divisible by 4; "
            f"{height}x{width} is not (set data.image_size)"
        )
    if height % factor or width % factor:
        raise ValueError(
            f"model.channels has {len(model.channels)} stride-2 layers, so the image size must be "
            f"divisible by {factor}; {height}x{width} is not (use fewer layers or data.image_size)"
        )


def _key_part(part: object) -> str:
    """One part of a dotted key as TOML would write it: bare, or quoted when it must be."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(_key_part(p) for p in first["loc"])
    message = " ".join(first["msg"].split())
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    message = message.removeprefix("Value error, ")
    where = f" {where}:" if where else ""
    return f"{source}:{where} {message}"


def _parse_value(text: str, item: str) -> Any:
    """Read an override value as TOML (numbers, booleans, lists, strings) or a bare string.

    A value that starts like a TOML string, array or table but does not parse is an error
    rather than a bare string, so ``--set model.hidden=[256,`` does not pass as text.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError) as err:
        if text[:1] in ("[", "{", '"', "'"):
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise ConfigError(f"--set {item!r}: value is not valid TOML ({reason})") from None
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (a new dict is returned)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.latent_dim=16")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty part in key {key!r}")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(text.strip(), item)
    return out


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw dict; errors become one-line ConfigErrors naming ``source`` and the key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning a missing or malformed file into a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a .toml file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as err:  # a path with a NUL character
        raise ConfigError(f"{path}: cannot read ({err})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load and validate a TOML config with optional ``--set`` overrides."""
    raw = apply_overrides(read_toml(path), overrides or [])
    source = str(path) + (" (with --set overrides)" if overrides else "")
    return config_from_dict(raw, source)


def to_toml(config: Config) -> str:
    """The config as TOML text, every default written out (the resolved config of a run)."""
    data = config.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)
