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

    from vaekit.config import config_from_dict, load_config, to_toml
    from vaekit.train import checkpoint as ckpt
    from vaekit.train.loop import train

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
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(Path(args.config))
    if args.print_config:
        print(to_toml(config), end="")
        return 0
    console.print(f"run directory: [bold]{run_dir}[/bold]")
    result = train(config, run_dir, resume=args.resume is not None, console=console)
    console.print(
        f"done: {result.epochs} epochs, {result.steps} steps. Outputs in [bold]{run_dir}[/bold]:\n"
        f"  weights   {run_dir / ckpt.WEIGHTS_FILE}\n"
        f"  metrics   {run_dir / ckpt.METRICS_FILE}\n"
        f"  events    {run_dir / ckpt.TENSORBOARD_DIR}  (tensorboard --logdir {run_dir})\n"
        f"  pictures  {run_dir / ckpt.PICTURES_DIR}/samples.png, reconstructions.png"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from vaekit.train.checkpoint import load_run
    from vaekit.viz.grid import save_grid

    if args.n <= 0:
        raise VaekitError(f"-n must be positive, got {args.n}")
    if args.temperature <= 0:
        raise VaekitError(f"--temperature must be positive, got {args.temperature}")
    model = load_run(args.run)
    gen = torch.Generator().manual_seed(args.seed)
    images = model.sample(args.n, temperature=args.temperature, generator=gen)
    out = Path(args.output or Path(args.run) / "pictures" / "samples_cli.png")
    save_grid(images, out)
    print(out)
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaekit.data import load_dataset, to_model_input
    from vaekit.train.checkpoint import load_run
    from vaekit.viz.grid import save_pairs

    model = load_run(args.run)
    data = load_dataset(model.config.data, args.split)
    n = min(args.n, len(data))
    nrow = min(8, n)
    n -= n % nrow
    x = to_model_input(data.images[:n], binarize="none", dequantize=False)
    if model.config.data.binarize != "none":
        x = (x > 0.5).float()
    out = Path(args.output or Path(args.run) / "pictures" / "reconstructions_cli.png")
    save_pairs(x, model.reconstruct(x), out, nrow=nrow)
    print(out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaekit.evaluate import evaluate_run
    from vaekit.train.checkpoint import EVAL_FILE

    result = evaluate_run(args.run, split=args.split, seed=args.seed, batch_size=args.batch_size)
    print(
        f"{result['dataset']} {result['split']} ({result['examples']} examples, seed {args.seed})"
    )
    print(f"  ELBO            {result['elbo']:.3f} nats")
    print(f"  reconstruction  {result['recon']:.3f} nats")
    print(f"  KL              {result['kl']:.3f} nats")
    if "bits_per_dim" in result:
        print(f"  bits/dim        {result['bits_per_dim']:.4f} (upper bound from the ELBO)")
    print(f"written to {Path(args.run) / EVAL_FILE}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="vaekit",
        description="Train, evaluate and sample variational autoencoders.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set model.latent_dim=16 (repeatable)",
    )
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit without training",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained model as a PNG grid")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("-o", "--output", help="PNG file (default RUN/pictures/samples_cli.png)")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior std")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="originals above their reconstructions, as a PNG")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=int, default=32, help="number of images (default 32)")
    p.add_argument("-o", "--output", help="PNG file (default RUN/pictures/reconstructions_cli.png)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("evaluate", help="test-set ELBO, reconstruction, KL (and bits/dim)")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=cmd_evaluate)

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; user errors print one line and exit with code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except VaekitError as err:
        print(f"vaekit: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
