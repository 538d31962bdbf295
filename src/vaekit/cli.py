"""The ``vaekit`` command (also ``python -m vaekit``, so ``torchrun -m vaekit`` works)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vaekit import __version__
from vaekit.errors import VaekitError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _default_run_dir(config_path: Path) -> Path:
    """``runs/<config name>``, or ``runs/<config name>-2`` etc. when that already exists."""
    base = Path("runs") / config_path.stem
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vaekit import distributed
    from vaekit.config import config_from_dict, load_config, to_toml
    from vaekit.train import checkpoint as ckpt
    from vaekit.train.loop import TrainingInterrupted, train

    console = Console(stderr=True)
    if args.resume is not None:
        if args.config is not None or args.run_dir is not None:
            raise VaekitError(
                "--resume RUN continues RUN with its own config; drop CONFIG/--run-dir"
            )
        run_dir = Path(args.resume)
        config = ckpt.read_run_config(run_dir)
        if args.set:
            from vaekit.config import apply_overrides, read_toml

            raw = apply_overrides(read_toml(run_dir / ckpt.CONFIG_FILE), args.set)
            config = config_from_dict(raw, f"{run_dir / ckpt.CONFIG_FILE} (with --set overrides)")
    else:
        if args.config is None:
            raise VaekitError("train needs a CONFIG file (see configs/) or --resume RUN")
        config = load_config(args.config, args.set)
        run_dir = Path(args.run_dir) if args.run_dir else None
    if args.print_config:
        print(to_toml(config), end="")
        return 0
    # Under torchrun: join the process group now, so that every process trains into the
    # run directory rank 0 chose, and only rank 0 speaks.
    world = distributed.start(config.train.device, config.train.dist_timeout)
    if not world.is_main:
        console = Console(stderr=True, quiet=True)
    if run_dir is None:
        chosen = str(_default_run_dir(Path(args.config))) if world.is_main else None
        run_dir = Path(distributed.broadcast_object(chosen))
    try:
        result = train(config, run_dir, resume=args.resume is not None, console=console)
    except BaseException as err:
        # Every process stops at the same step on a signal; after any other error the peers
        # may be gone, so the group is left without a goodbye.
        if isinstance(err, TrainingInterrupted):
            distributed.stop_after_signal()
        else:
            distributed.stop(clean=False)
        raise
    distributed.stop()
    console.print(
        f"done: {result.epochs} epochs, {result.steps} steps. Outputs in [bold]{run_dir}[/bold]:\n"
        f"  weights   {run_dir / ckpt.WEIGHTS_FILE}\n"
        f"  metrics   {run_dir / ckpt.METRICS_FILE}\n"
        f"  events    {run_dir / ckpt.TENSORBOARD_DIR}  (tensorboard --logdir {run_dir})\n"
        f"  pictures  {run_dir / ckpt.PICTURES_DIR}/"
        + (
            "reconstructions.png"
            if config.model.kind == "vqvae"
            else "samples.png, reconstructions.png"
        )
    )
    if config.model.kind == "vqvae":
        console.print(f"  next      vaekit train-prior {run_dir}   (to sample and get the bound)")
    return 0


def _picture_path(args: argparse.Namespace, key: str) -> Path:
    """The ``-o`` path, or the report's file for this picture under RUN/pictures/."""
    from vaekit.train.checkpoint import PICTURES_DIR
    from vaekit.viz.figures import picture_name

    return Path(args.output) if args.output else Path(args.run) / PICTURES_DIR / picture_name(key)


def _positive(value: float, flag: str) -> None:
    if value <= 0:
        raise VaekitError(f"{flag} must be positive, got {value}")


def cmd_sample(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_samples

    _positive(args.n, "-n")
    _positive(args.temperature, "--temperature")
    model = load_run(args.run)
    out = _picture_path(args, "samples")
    print(draw_samples(model, out, n=args.n, temperature=args.temperature, seed=args.seed))
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_reconstructions

    _positive(args.n, "-n")
    model = load_run(args.run)
    out = _picture_path(args, "reconstructions")
    print(draw_reconstructions(model, out, n=args.n, seed=args.seed))
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_interpolation, require_kind

    _positive(args.pairs, "--pairs")
    _positive(args.steps, "--steps")
    model = load_run(args.run)
    require_kind(model, f"interpolation_{args.mode}")
    out = _picture_path(args, f"interpolation_{args.mode}")
    print(
        draw_interpolation(
            model, out, mode=args.mode, pairs=args.pairs, steps=args.steps, seed=args.seed
        )
    )
    return 0


def cmd_manifold(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_manifold, require_kind

    _positive(args.n, "-n")
    model = load_run(args.run)
    require_kind(model, "manifold")
    print(draw_manifold(model, _picture_path(args, "manifold"), n=args.n))
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_traversals, layer_traversal_key, require_kind

    _positive(args.dims, "--dims")
    model = load_run(args.run)
    require_kind(model, "traversals")
    ladder = args.layer is not None and model.config.model.kind == "hvae"
    out = _picture_path(args, layer_traversal_key(args.layer) if ladder else "traversals")
    print(draw_traversals(model, out, dims=args.dims, seed=args.seed, layer=args.layer))
    return 0


def cmd_scatter(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_scatter, require_kind

    _positive(args.points, "--points")
    model = load_run(args.run)
    require_kind(model, "scatter")
    out = _picture_path(args, "scatter")
    print(draw_scatter(model, out, points=args.points, seed=args.seed))
    return 0


def cmd_codes(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_codes

    _positive(args.n, "-n")
    model = load_run(args.run)
    print(draw_codes(model, _picture_path(args, "codes"), n=args.n, seed=args.seed))
    return 0


def cmd_code_usage(args: argparse.Namespace) -> int:
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.figures import draw_code_usage

    model = load_run(args.run)
    print(draw_code_usage(model, _picture_path(args, "code_usage"), seed=args.seed))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vaekit.train import checkpoint as ckpt
    from vaekit.train.prior_run import train_prior

    console = Console(stderr=True)
    result = train_prior(args.run, overrides=args.set, overwrite=args.overwrite, console=console)
    last = result.epochs[-1]
    run = Path(args.run)
    console.print(
        f"done: validation NLL of the codes {last.val_nll:.2f} nats per map "
        f"({result.bits_per_code:.3f} bits per code). Outputs in [bold]{run}[/bold]:\n"
        f"  prior     {result.path}\n"
        f"  metrics   {run / ckpt.PRIOR_METRICS_FILE}\n"
        f"  next      vaekit sample {run}   |   vaekit evaluate {run}"
    )
    return 0


def cmd_animate(args: argparse.Namespace) -> int:
    from vaekit.viz.animation import training_gif

    print(training_gif(args.run, _picture_path(args, "gif"), duration_ms=args.duration_ms))
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from vaekit.viz.figures import draw_curves

    print(draw_curves(args.run, _picture_path(args, "curves")))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaekit.viz.report import build_report

    print(build_report(args.run, seed=args.seed))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.evaluate import evaluate_run
    from vaekit.train.checkpoint import EVAL_FILE

    if args.iw is not None:
        _positive(args.iw, "--iw")
    _positive(args.chunk_size, "--chunk-size")
    result = evaluate_run(
        args.run,
        split=args.split,
        seed=args.seed,
        batch_size=args.batch_size,
        iw_k=args.iw,
        chunk_size=args.chunk_size,
        binarization=args.binarization,
        diagnostics=not args.no_diagnostics,
        limit=args.limit,
        compile=args.compile,
        device=args.device,
    )
    print(
        f"{result['dataset']} {result['split']} ({result['examples']} examples, "
        f"binarization {result['binarization']}, seed {args.seed}, on {result['device']})"
    )
    if result.get("model") == "vqvae":
        _print_vq_evaluation(result)
        print(f"written to {Path(args.run) / EVAL_FILE}")
        return 0
    print(f"  ELBO            {result['elbo']:.3f} nats")
    print(f"  reconstruction  {result['recon']:.3f} nats")
    print(f"  KL              {result['kl']:.3f} nats")
    layers = [key for key in result if key.startswith("kl_z")]
    if layers:
        per_layer = "  ".join(f"{key[3:]} {result[key]:.3f}" for key in layers)
        print(f"  KL per layer    {per_layer} nats")
    if "bits_per_dim" in result:
        print(f"  bits/dim        {result['bits_per_dim']:.4f} (upper bound from the ELBO)")
    if "iw_nll" in result:
        print(
            f"  IW-NLL (K={result['iw_k']})  {result['iw_nll']:.3f} nats"
            f"  [{result['iw_seconds']:.1f} s{', compiled' if result.get('iw_compiled') else ''}]"
        )
        if "iw_bits_per_dim" in result:
            print(f"  IW bits/dim     {result['iw_bits_per_dim']:.4f}")
    diag = result.get("diagnostics")
    if diag:
        dims = diag.get("latent_dims", [])
        per_layer = ", ".join(
            f"z{i} {diag[f'active_units_z{i}']} of {d}" for i, d in enumerate(dims, start=1)
        )
        print(
            f"  active units    {diag['active_units']} of {diag['latent_dim']}"
            + (f" ({per_layer})" if per_layer else "")
            + f"   I(x;{diag.get('mi_layer', 'z')}) {diag['mutual_information']:.3f} nats"
            f" (at most log {diag['mi_examples']} = {diag['mi_upper_limit']:.3f})"
        )
    print(f"written to {Path(args.run) / EVAL_FILE}")
    return 0


def _print_vq_evaluation(result: dict) -> None:
    print(f"  reconstruction  {result['recon']:.3f} nats  (-log p(x|z_q))")
    print(f"  squared error   {result['mse_per_pixel']:.5f} per pixel")
    print(
        f"  codes used      {result['codes_used']} of {result['num_codes']} "
        f"({result['code_usage']:.1%}), perplexity {result['perplexity']:.1f}"
    )
    if "prior_nll" in result:
        print(
            f"  prior NLL       {result['prior_nll']:.3f} nats per map "
            f"({result['prior_bits_per_code']:.3f} bits per code)"
        )
    else:
        print(f"  prior           {result['prior']}")
    print(f"  -log p(x) <=    {result['nll_upper_bound']:.3f} nats")
    if "bits_per_dim" in result:
        print(f"  bits/dim <=     {result['bits_per_dim']:.4f}")


def _other_dataset(config, spec: str):
    """The run's data config pointed at another dataset, resized to the run's image shape."""
    from vaekit.config import DataConfig
    from vaekit.data.catalog import known_names

    raw = config.data.model_dump()
    c, h, _ = config.image_shape
    if spec in known_names():
        raw.update(name=spec, path=None)
    else:
        raw.update(name=None, path=Path(spec))
    raw.update(image_size=h, channels=c)
    return DataConfig.model_validate(raw)


def cmd_score(args: argparse.Namespace) -> int:
    import csv
    import io

    from vaekit.atomic import atomic_write_text
    from vaekit.data import load_dataset
    from vaekit.evaluate import auroc, score_examples
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.scores import write_scores

    if args.iw is not None:
        _positive(args.iw, "--iw")
    model = load_run(args.run)
    config = model.config
    other = load_dataset(_other_dataset(config, args.data), args.split)
    reference = load_dataset(config.data, "test")
    if args.limit:
        other = other.subset(torch_arange(min(args.limit, len(other))))
        reference = reference.subset(torch_arange(min(args.limit, len(reference))))
    kwargs = {"iw_k": args.iw, "seed": args.seed, "chunk_size": args.chunk_size}
    scores = score_examples(model, config, other, **kwargs)
    in_scores = score_examples(model, config, reference, **kwargs)
    area = auroc(in_scores, scores)
    name = args.name or Path(args.data).stem
    meta = {
        "dataset": args.data,
        "split": args.split,
        "iw_k": args.iw,
        "limit": args.limit,
        "seed": args.seed,
        "score": f"IW-NLL (K={args.iw})" if args.iw else "-ELBO",
        "reference": f"{config.data.name or config.data.path} test",
    }
    stored = write_scores(args.run, name, scores, in_scores, area, meta)
    if args.output:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["index", "score"])
        writer.writerows((i, repr(float(v))) for i, v in enumerate(scores.tolist()))
        atomic_write_text(args.output, buf.getvalue())
    kind = meta["score"]
    print(
        f"{args.data} {args.split}: {len(other)} images, mean {kind} {scores.mean():.2f} nats; "
        f"{meta['reference']}: {len(reference)} images, mean {in_scores.mean():.2f} nats"
    )
    print(f"AUROC (higher score = {args.data}) {area:.4f}")
    print(args.output or stored)
    return 0


def torch_arange(n: int):
    """``torch.arange(n)`` without importing torch at CLI start-up."""
    import torch

    return torch.arange(n)


def cmd_data_list(args: argparse.Namespace) -> int:
    from vaekit.data.catalog import list_datasets

    rows = [{"name": "NAME", "location": "LOCATION", "description": "DESCRIPTION"}]
    rows += list_datasets()
    name_w = max(len(r["name"]) for r in rows)
    loc_w = max(len(r["location"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{name_w}}  {r['location']:<{loc_w}}  {r['description']}")
    return 0


def _format_info(info: dict, indent: str = "") -> list[str]:
    lines = []
    for key, value in info.items():
        label = key.replace("_", " ")
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{indent}{label}:")
            for item in value:
                lines.append(f"{indent}  " + "  ".join(str(v) for v in item.values()))
        elif isinstance(value, list):
            joined = ", ".join(str(v) for v in value)
            lines.append(f"{indent}{label}: {joined}")
        else:
            lines.append(f"{indent}{label}: {value}")
    return lines


def cmd_data_info(args: argparse.Namespace) -> int:
    from vaekit.data.catalog import dataset_info

    info = dataset_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print("\n".join(_format_info(info)))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from vaekit.data.catalog import download

    dest = download(
        args.name,
        mirrors=[args.mirror] if args.mirror else None,
        dest=Path(args.dest) if args.dest else None,
    )
    print(dest)
    return 0


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vaekit",
        description="Train, evaluate and sample variational autoencoders.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of any error instead of a one-line message",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="train a model from a TOML config",
        description=(
            "Train a model. Writes config.toml, model.safetensors, state.pt, metrics.jsonl, "
            "TensorBoard events and pictures into the run directory."
        ),
    )
    p.add_argument("config", nargs="?", help="TOML config file (see configs/)")
    p.add_argument("--run-dir", help="where to write the run (default: runs/<config name>)")
    _add_set_option(p, "override a config key, e.g. --set model.latent_dim=16 (repeatable)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit without training",
    )
    p.set_defaults(func=cmd_train)

    def picture(name: str, help_text: str, key: str, seed: bool = True) -> argparse.ArgumentParser:
        from vaekit.viz.figures import PICTURES

        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("run", help="run directory")
        q.add_argument("-o", "--output", help=f"output file (default RUN/pictures/{PICTURES[key]})")
        if seed:
            q.add_argument("--seed", type=int, default=0, help="picks the images (default 0)")
        return q

    p = picture("sample", "decoded draws from the prior, as a PNG grid", "samples")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior std")
    p.set_defaults(func=cmd_sample)

    p = picture("reconstruct", "test images above their reconstructions", "reconstructions")
    p.add_argument("-n", type=int, default=32, help="number of images (default 32)")
    p.set_defaults(func=cmd_reconstruct)

    p = picture(
        "interpolate", "paths in latent space between pairs of test images", "interpolation_linear"
    )
    p.add_argument("--mode", choices=["linear", "slerp"], default="linear")
    p.add_argument("--pairs", type=int, default=8, help="pairs of images, one per row")
    p.add_argument("--steps", type=int, default=10, help="decoded points per path")
    p.set_defaults(func=cmd_interpolate)

    p = picture(
        "manifold", "the decoded 2-D latent plane (latent_dim 2 only)", "manifold", seed=False
    )
    p.add_argument("-n", type=int, default=20, help="grid points per axis (default 20)")
    p.set_defaults(func=cmd_manifold)

    p = picture("traverse", "one row per latent dimension (most KL first)", "traversals")
    p.add_argument(
        "--dims", type=int, default=10, help="dimensions to show (default 10; per layer)"
    )
    p.add_argument(
        "--layer",
        type=int,
        help="hierarchical VAE: only this latent layer, 1 = next to x (default: every layer; "
        "written to RUN/pictures/traversals_z<LAYER>.png)",
    )
    p.set_defaults(func=cmd_traverse)

    p = picture("scatter", "posterior means of test images coloured by label", "scatter")
    p.add_argument("--points", type=int, default=5000, help="test images to plot")
    p.set_defaults(func=cmd_scatter)

    p = picture("codes", "VQ-VAE: test images beside their code maps, one colour per code", "codes")
    p.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    p.set_defaults(func=cmd_codes)

    p = picture("code-usage", "VQ-VAE: how often each code is used on the test set", "code_usage")
    p.set_defaults(func=cmd_code_usage)

    p = sub.add_parser(
        "train-prior",
        help="VQ-VAE: fit the prior over codes that sampling and the bound need",
        description="Encode the run's training images to code maps with the trained VQ-VAE "
        "and fit an autoregressive transformer prior to them (settings: the [prior] section "
        "of the run's config.toml). Writes RUN/prior.safetensors and RUN/prior_metrics.jsonl.",
    )
    p.add_argument("run", help="run directory of a trained VQ-VAE")
    _add_set_option(p, "override a prior setting, e.g. --set prior.epochs=10 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="refit a prior the run already has")
    p.set_defaults(func=cmd_train_prior)

    p = picture("animate", "GIF of the fixed-z sample grid across epochs", "gif", seed=False)
    p.add_argument("--duration-ms", type=int, default=500, help="time per frame")
    p.set_defaults(func=cmd_animate)

    p = picture(
        "curves", "training and validation ELBO, recon and KL per epoch", "curves", seed=False
    )
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser(
        "report",
        help="write RUN/report.html with every number and picture",
        description="Draw every picture and write one self-contained "
        "report.html (images inlined; opens offline).",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--seed", type=int, default=0, help="picks the images (default 0)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "evaluate",
        help="test ELBO, IW-NLL, bits/dim and collapse diagnostics",
        description="Evaluate a run on held-out data and write RUN/eval.json. "
        "The same checkpoint and --seed give the same numbers.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument(
        "--iw",
        type=int,
        metavar="K",
        help="also estimate -log p(x) with K importance samples (up to 5000)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=100,
        help="importance samples per decoder pass; bounds memory (default 100)",
    )
    p.add_argument(
        "--binarization",
        choices=["dynamic", "static", "none"],
        help="test-set protocol for Bernoulli models (default: the run's own)",
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the IW decoder passes through torch.compile (1.12x faster for the mlp "
        "bench model after a few seconds of compiling; needs a C++ compiler, else eager). "
        "Default: on a CPU when --iw K times the examples reaches 10 million",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs (default auto: the GPU when torch sees one, else the CPU)",
    )
    p.add_argument(
        "--no-diagnostics",
        action="store_true",
        help="skip KL per dimension, active units and mutual information",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "score",
        help="per-example -log p(x) of another dataset, with AUROC",
        description="Score each image of DATASET (a catalog name or a path) "
        "under the run's model, compare with the run's own test images (AUROC) "
        "and store both in RUN/scores/ for the report. Images are resized and converted "
        "to the run's image size and channels.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument(
        "--data",
        required=True,
        metavar="DATASET",
        help="catalog name (e.g. mnist, sprites) or a file/folder of images",
    )
    p.add_argument("-o", "--output", help="also write the scores to this CSV (index,score)")
    p.add_argument("--iw", type=int, metavar="K", help="IW-NLL with K samples (default: -ELBO)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=100)
    p.add_argument("--limit", type=int, help="score at most N images of each set")
    p.add_argument("--name", help="name of the score set in the report (default: DATASET)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("data", help="list, inspect and download datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("list", help="known datasets and where they are installed")
    q.set_defaults(func=cmd_data_list)
    q = data_sub.add_parser("info", help="files, sizes, checksums and shapes of a dataset")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="print the facts as JSON")
    q.set_defaults(func=cmd_data_info)
    q = data_sub.add_parser("download", help="fetch a dataset with SHA-256 checks into the cache")
    q.add_argument("name")
    q.add_argument("--mirror", help="base URL to fetch from instead of the public mirrors")
    q.add_argument("--dest", help="folder to write into (default ~/.cache/vaekit/NAME)")
    q.set_defaults(func=cmd_data_download)
    return parser


def _one_line(text: str) -> str:
    """A message on one line: a multi-line exception text joined with "; "."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def _who() -> str:
    """ "vaekit" or, in a torchrun job of several processes, "vaekit[rank N]"."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return f"vaekit[rank {os.environ['RANK']}]"
    return "vaekit"


def _is_interrupted_peer(err: BaseException) -> bool:
    """A signal stopped a torchrun job and this is not rank 0: rank 0 alone says so."""
    import os

    if os.environ.get("RANK", "0") == "0":
        return False
    from vaekit.train.loop import TrainingInterrupted

    return isinstance(err, TrainingInterrupted)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: user errors print one line and exit 2, unexpected ones one line and exit 1.

    With ``--debug`` every exception propagates with its traceback instead.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    code = _run(func, args)
    # A torchrun worker must not run the interpreter's teardown (see distributed.exit_now).
    # The module is looked up, not imported: a command that never trained has no group.
    distributed = sys.modules.get("vaekit.distributed")
    if distributed is not None and distributed.joined_a_group():
        distributed.exit_now(code)
    return code


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """The command's exit code, with every error turned into one line and its code."""
    try:
        return func(args)
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, VaekitError):
            if not _is_interrupted_peer(err):
                print(f"{_who()}: error: {_one_line(str(err))}", file=sys.stderr)
            return getattr(err, "exit_code", EXIT_USER_ERROR)  # 130/143 after a signal
        detail = _one_line(str(err)) or "(no message)"
        print(
            f"{_who()}: internal error: {type(err).__name__}: {detail} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
