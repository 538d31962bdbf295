"""BENCHMARKS.md from every bench/results/*.json: one section per device and precision."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# Targets of the speed issue, on the 2-core CPU machine, fp32 unless marked.
TARGETS = {
    ("mlp", "limit"): 0.85,
    ("mlp", "pythae"): 1.4,
    ("conv", "limit"): 0.7,
    ("conv", "pythae"): 1.3,
    ("iw-eval", "limit"): 0.8,
    ("iw-eval-compiled", "limit"): 0.8,
}
BF16_PYTHAE_TARGET = 2.0


def _num(s: dict[str, float] | None, digits: int = 0) -> str:
    """median (min-max) of a summary."""
    if not s:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"


def _ratio(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def _mb(value: Any) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "-"


def _machine(result: dict[str, Any]) -> str:
    """The date and machine facts a section opens with."""
    m = result["machine"]
    return (
        f"{result['date']}; {m['cpu']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch "
        f"threads, torch {m['torch']} ({m['blas']}), Python {m['python']}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
    )


def _commit(result: dict[str, Any]) -> str:
    """ "; commit ABC" of a result, marked when the tree had uncommitted changes."""
    commit = (result.get("commit") or "unknown")[:12]
    return f"; commit {commit}{' with uncommitted changes' if result.get('dirty') else ''}"


def _quick(result: dict[str, Any]) -> str:
    return " (QUICK smoke run: numbers not representative)" if result.get("quick") else ""


def section(result: dict[str, Any]) -> list[str]:
    """The Markdown for one results file."""
    if result.get("kind") == "ddp":
        return ddp_section(result)
    if result.get("kind") == "quality":
        return quality_section(result)
    if result.get("kind") == "precision":
        return precision_section(result)
    lines = [
        f"## {result['name']}",
        "",
        _machine(result)
        + f"; precision {result['precision']}; {result['repeats']} repeats"
        + _quick(result)
        + f"; pythae: {result.get('pythae', '-')}.",
        "",
        "Medians with (min-max) over the repeats; ratios are taken per repeat (the contenders "
        "ran back to back) and then summarised. Peak RSS in MiB, each in a fresh process.",
        "",
        "| workload | vaekit | bare-product limit | vaekit / limit | tutorial loop | "
        "vaekit / tutorial | pythae | vaekit / pythae | peak RSS vaekit / tutorial / pythae |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for name, w in result["workloads"].items():
        if "status" in w:
            lines.append(f"| `{name}` | {w['status']} | | | | | | | |")
            continue
        if "errors" in w and "images_per_s" not in w and "vaekit" not in w:
            lines.append(f"| `{name}` | error: {w['errors'][0][:120]} | | | | | | | |")
            continue
        if name.startswith("iw-eval"):
            gpu = f" (GPU {w['peak_gpu_mb']:,.0f})" if "peak_gpu_mb" in w else ""
            compiled = ""
            if "compile_seconds" in w:
                how = "compiled" if w.get("compiled") else "compile failed: eager"
                compiled = f" ({how}; compiling took {w['compile_seconds']:.1f} s more)"
            lines.append(
                f"| `{name}` K={w['k']}, {w['images']} images | "
                f"{_num(w['images_per_s'], 1)} images/s; {w['seconds']:.1f} s in all{compiled} | "
                f"{_num(w.get('limit_images_per_s'), 1)} | {_ratio(w.get('ratio_vs_limit'))} "
                f"| | | | | {_mb(w['peak_rss_mb'])}{gpu} |"
            )
            continue
        v, plain, py = w.get("vaekit", {}), w.get("plain", {}), w.get("pythae", {})
        gpu = f" (GPU {v['peak_gpu_mb']:,.0f})" if "peak_gpu_mb" in v else ""
        data = f" ({v['data']})" if v.get("data", "fashion-mnist") != "fashion-mnist" else ""
        if "note" in w:
            # Measured alone (no limit or peers asked): n/a in their columns, the note below.
            lines.append(
                f"| `{name}`{data} samples/s | {_num(v.get('samples_per_s'))} | n/a | n/a | "
                f"n/a | n/a | n/a | n/a | {_mb(v.get('peak_rss_mb'))}{gpu} / n/a / n/a |"
            )
            notes.append(f"`{name}`: {w['note']}.")
            for err in v.get("errors", [])[:1]:
                lines.append(f"| | vaekit error: {err[-160:]!r} | | | | | | | |")
            continue
        version = f" {py['version']}" if py.get("version") else ""
        lines.append(
            f"| `{name}`{data} samples/s | {_num(v.get('samples_per_s'))} | "
            f"{_num(v.get('limit_samples_per_s'))} | {_ratio(w.get('ratio_vs_limit'))} | "
            f"{_num(plain.get('samples_per_s'))} | {_ratio(w.get('ratio_vs_plain'))} | "
            f"{_num(py.get('samples_per_s'))}{version} | {_ratio(w.get('ratio_vs_pythae'))} | "
            f"{_mb(v.get('peak_rss_mb'))}{gpu} / {_mb(plain.get('peak_rss_mb'))} / "
            f"{_mb(py.get('peak_rss_mb'))} |"
        )
        for who, entry in (("vaekit", v), ("tutorial", plain), ("pythae", py)):
            for err in entry.get("errors", [])[:1]:
                lines.append(f"| | {who} error: {err[-160:]!r} | | | | | | | |")
    if notes:
        lines += ["", *notes]
    lines += ["", *targets(result), ""]
    if "scaling" in result:
        lines += scaling(result["scaling"])
    return lines


def ddp_section(result: dict[str, Any]) -> list[str]:
    """One process against two under torchrun (bench/ddp.py): samples/s, ratio, wall time."""
    settings = result["settings"]
    lines = [
        f"## {result['name']}",
        "",
        _machine(result)
        + _commit(result)
        + f"; `{settings['config']}`, batch {settings['batch']}, epochs {settings['epochs']}"
        + (f", `--set {' '.join(settings['set'])}`" if settings.get("set") else "")
        + f"; {result['repeats']} repeats"
        + _quick(result)
        + ".",
        "",
        "Data-parallel training (`make bench-ddp`, `bench/ddp.py`): training samples/s that "
        "`vaekit train` writes to metrics.jsonl (global samples over the epoch's training "
        "time, validation excluded), medians with (min-max) over the repeats; the contenders "
        "took turns, and the ratio to one process with 2 threads is taken per repeat, then "
        "summarised. Wall seconds time the whole command, start-up, validation and writing "
        "included.",
        "",
        "| contenders | samples/s | ratio to 1 process / 2 threads | wall seconds | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    contenders, ratios = result["contenders"], result["ratios"]
    base = "1proc-2threads"
    for key, c in contenders.items():
        ratio = _ratio(ratios.get(f"{key}/{base}")) if key != base else "1"
        lines.append(
            f"| {c['label']} | {_num(c.get('samples_per_s'))} | {ratio} | "
            f"{_num(c.get('wall_seconds'), 1)} | {_mb(c.get('peak_rss_mb'))} |"
        )
        for err in c.get("errors", [])[:1]:
            lines.append(f"| | error: {err[-160:]!r} | | | |")
    rss = result.get("rss_note")
    lines += [
        "",
        f"On this {result['machine']['cpu_count']}-core machine one process with 2 threads "
        "already uses both cores through intra-op threads, so two processes cannot be expected "
        "to double its throughput: they "
        "trade the threads' split of each matrix product for a split of the batch, and DDP "
        "adds a gradient all-reduce (gloo) per step. Two processes against one with 1 thread: "
        f"{_ratio(ratios.get('2proc-torchrun/1proc-1thread'))}."
        + (f" Peak RSS: {rss}." if rss else " Peak RSS: not measured."),
        "",
    ]
    return lines


def precision_section(result: dict[str, Any]) -> list[str]:
    """fp32 against bf16 training of one model (bench/precision.py): test IW-NLL and speed."""
    settings = result["settings"]
    lines = [
        f"## {result['name']}",
        "",
        _machine(result) + _commit(result) + _quick(result) + ".",
        "",
        f"`make bench-precision` (`bench/precision.py`): `{settings['config']}` trained for "
        f"{settings['epochs']} epochs with `train.precision` fp32 and bf16 (autocast: the "
        "weights, the optimizer and the probability terms stay fp32), same seed, then scored "
        f"in fp32 by `vaekit evaluate --iw {settings['iw_k']} --binarization dynamic --seed 0` "
        f"on the first {settings['test_limit']:,} test images. Training samples/s: the median "
        "over epochs.",
        "",
        "| precision | test IW-NLL (nats) | test ELBO | training samples/s | training seconds |",
        "|---|---|---|---|---|",
    ]
    for name, run in result["runs"].items():
        lines.append(
            f"| {name} | **{run['test_iw_nll']:.2f}** | {run['test_elbo']:.2f} | "
            f"{run['samples_per_s']:,.0f} | {run['train_seconds']:.0f} |"
        )
    diff = result["nll_bf16_minus_fp32"]
    lines += [
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| bf16 test IW-NLL within {result['target_nats']:g} nats of fp32 | "
        f"{diff:+.2f} nats (bf16 - fp32); bf16 trains "
        f"{result['speed_bf16_over_fp32']:.2f}x as many samples/s | "
        f"{'yes' if result['met'] else 'no'} |",
        "",
    ]
    return lines


def quality_section(result: dict[str, Any]) -> list[str]:
    """Test NLL of each recipe (bench/quality.py) beside the published numbers."""
    lines = [
        "## quality",
        "",
        "`make bench-quality` (`bench/quality.py`): each recipe trained for a wall-clock budget, "
        "then `vaekit evaluate --iw K --binarization dynamic --seed 0`: dynamically binarized "
        "Fashion-MNIST, the test set binarized once with seed 0, test NLL = the "
        "importance-weighted estimate in nats per image (lower is better). One row per run, "
        "in the order they ran. Rows marked pythae are pythae's model of the recipe's kind "
        "(`make bench-quality PEER=pythae`, `bench/quality_peer.py`): the recipe's nets, "
        "optimizer, batch, budget, training binarization and test images, trained by pythae's "
        "own trainer and scored by the same K-sample estimator.",
        "",
        *peer_comparison(result.get("rows", [])),
        "| recipe | trained by | seed | test NLL | IW K | test images | ELBO | epochs (best) | "
        "training minutes (budget) | commit | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.get("rows", []):
        m = row["machine"]
        who = f"pythae {row['peer_model'].upper()}" if row.get("peer") else "vaekit"
        lines.append(
            f"| `{row['recipe']}` | {who} | {row['seed']} | **{row['test_nll']:.2f}** | "
            f"{row['iw_k']} | "
            f"{row['test_examples']:,} | {row['test_elbo']:.2f} | {row['epochs']} "
            f"({row.get('best_epoch') or '-'}) | {row['train_seconds'] / 60:.1f} "
            f"({_budget(row)}) | {row['commit']}{'+' if row.get('dirty') else ''} | "
            f"{m['cpu']}, {m['cpu_count']} CPUs{', ' + m['gpu'] if m.get('gpu') else ''} |"
        )
    lines += [
        "",
        "Published test NLL for the same protocol (Norouzi, Fleet & Norouzi 2020, "
        '"Exemplar VAE", Fashion-MNIST table):',
        "",
        "| model | test NLL |",
        "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in result.get("published", {}).items()),
        "",
    ]
    return lines


def _budget(row: dict[str, Any]) -> str:
    """A row's budget: its minutes, or its epochs where it trained a fixed number of them."""
    if row.get("budget_epochs"):
        return f"{row['budget_epochs']} epochs"
    return f"{row['budget_minutes']:g}"


def _seeds(rows: list[dict[str, Any]]) -> str:
    """Mean test NLL over seeds, with min-max where there is more than one."""
    values = [r["test_nll"] for r in rows]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f} (1 seed)"
    return f"{mean:.2f} ({min(values):.2f}-{max(values):.2f}, {len(values)} seeds)"


def peer_comparison(rows: list[dict[str, Any]]) -> list[str]:
    """vaekit's recipe beside pythae's model of its kind at the same budget, over seeds.

    The margin counts only when it is larger than the run-to-run spread (max - min over
    seeds) of both sides, which needs at least two seeds of each. Each seed counts once, by its
    newest row: a rerun after a change to the code replaces the seed's older number here (the
    table of every row keeps them all).
    """
    newest: dict[tuple[str, float, str, int], dict[str, Any]] = {}
    for row in rows:  # rows are in the order they were measured
        if row.get("iw_k") != 5000 or row.get("test_examples") != 10000:
            continue  # only protocol rows are compared
        if row.get("budget_minutes") is None:
            continue  # an epoch budget has no same-minutes peer
        if row.get("machine", {}).get("device", "cpu") != "cpu":
            continue  # pythae's rows are CPU runs: a GPU run is no same-budget peer
        side = row.get("peer") or "vaekit"
        newest[(row["recipe"], row["budget_minutes"], side, row["seed"])] = row
    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for (recipe, minutes, side, _seed), row in newest.items():
        groups.setdefault((recipe, minutes), {"vaekit": [], "pythae": []})[side].append(row)
    lines = [
        "### vaekit against pythae (same nets, optimizer, batch, budget, test images, K = 5000)",
        "",
        "| recipe | budget (minutes) | vaekit test NLL, mean (min-max) | pythae model | "
        "pythae test NLL, mean (min-max) | pythae - vaekit | larger than the spread |",
        "|---|---|---|---|---|---|---|",
    ]
    for (recipe, minutes), sides in groups.items():
        ours, theirs = sides["vaekit"], sides["pythae"]
        if not ours or not theirs:
            continue
        ours_nll = [r["test_nll"] for r in ours]
        theirs_nll = [r["test_nll"] for r in theirs]
        margin = sum(theirs_nll) / len(theirs_nll) - sum(ours_nll) / len(ours_nll)
        if len(ours) < 2 or len(theirs) < 2:
            verdict = "spread not measured (needs 2 seeds of each)"
        else:
            widest = max(max(v) - min(v) for v in (ours_nll, theirs_nll))
            verdict = f"{'yes' if margin > widest else 'no'} (spread {widest:.2f})"
        lines.append(
            f"| `{recipe}` | {minutes:g} | {_seeds(ours)} | {theirs[0]['peer_model'].upper()} | "
            f"{_seeds(theirs)} | {margin:+.2f} | {verdict} |"
        )
    return [*lines, ""] if len(lines) > 4 else []


def targets(result: dict[str, Any]) -> list[str]:
    """Each target of the issue with the measured ratio and whether it is met."""
    if result["machine"]["device"] != "cpu":
        return []
    rows = ["| target | measured (median, min-max) | met |", "|---|---|---|"]
    precision = result["precision"]
    for (name, peer), goal in TARGETS.items():
        if precision != "fp32":
            continue
        s = result["workloads"].get(name, {}).get(f"ratio_vs_{peer}")
        met = "-" if not s else ("yes" if s["median"] >= goal else "no")
        rows.append(f"| `{name}` vaekit / {peer} >= {goal} | {_ratio(s)} | {met} |")
    if precision == "bf16":
        s = result["workloads"].get("mlp", {}).get("ratio_vs_pythae")
        met = "-" if not s else ("yes" if s["median"] >= BF16_PYTHAE_TARGET else "no")
        rows.append(
            f"| `mlp` bf16 vaekit / pythae (fp32: pythae has no CPU bf16) >= "
            f"{BF16_PYTHAE_TARGET} | {_ratio(s)} | {met} |"
        )
    return rows if len(rows) > 2 else []


def scaling(s: dict[str, Any]) -> list[str]:
    """The batch/latent table and the iw-eval memory-versus-K table."""
    lines = [
        "### Scaling (`mlp`, vaekit)",
        "",
        "| batch | latent | samples/s | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for row in s.get("train", []):
        value = _num(row.get("samples_per_s")) if "error" not in row else "error"
        lines.append(
            f"| {row['batch']} | {row['latent']} | {value} | {_mb(row.get('peak_rss_mb'))} |"
        )
    lines += [
        "",
        "### `iw-eval` memory versus K (chunk 100)",
        "",
        "| K | images | IW batch | seconds | RSS before IW MiB | peak RSS MiB | growth MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in s.get("iw_memory", []):
        if "error" in row:
            lines.append(f"| {row['k']} | {row['images']} | error | | | | |")
            continue
        growth = row["peak_rss_mb"] - row["rss_before_iw_mb"]
        lines.append(
            f"| {row['k']} | {row['images']} | {row['iw_batch']} | {row['seconds']:.1f} | "
            f"{row['rss_before_iw_mb']:,.0f} | {row['peak_rss_mb']:,.0f} | {growth:,.0f} |"
        )
    return [*lines, ""]


def write_markdown(results_dir: Path, path: Path) -> None:
    """Rewrite ``path`` from every results file in ``results_dir``."""
    lines = [
        "# vaekit benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); do not edit by hand. Workloads: `mlp` "
        "(784-512-256-(2x32) MLP VAE, Bernoulli, Adam 1e-3, batch 128), `conv` "
        "(Conv(32,3,s2)-Conv(64,3,s2)-Linear(2x16) / Linear(7*7*32)-ConvT(64)-ConvT(32)-"
        "ConvT(1), batch 128), `iw-eval` (IW-NLL, K = 5000, on the `mlp` model after one "
        "epoch, eager as `vaekit evaluate --no-compile` runs it; `iw-eval-compiled` the same "
        "through the torch.compile of the decoder and likelihood that `vaekit evaluate` "
        "picks by itself at this size (`--compile`), its compile time reported apart), on "
        "dynamically "
        "binarized Fashion-MNIST; `vqvae` (the configs/vqvae_fashion.toml "
        "recipe: resnet VQ-VAE, K = 512 EMA codes of dim 64, discretized logistic likelihood, "
        "Adam 5e-4, batch 128) on 8-bit Fashion-MNIST. A workload marked with a dataset in "
        "brackets ran on that fallback (Fashion-MNIST not installed). The limit is the same "
        "model's bare matrix products and convolutions (forward and backward) timed alone; see "
        "bench/limits.py. The tutorial loop and pythae train the same nets (bench/peers.py).",
        "",
    ]
    for file in sorted(results_dir.glob("*.json")):
        lines += section(json.loads(file.read_text()))
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.rename(path)


def save(result: dict[str, Any], results_dir: Path, path: Path) -> Path:
    """Write ``result`` to results_dir/<name>.json (whole or not at all), then rewrite
    ``path`` from every results file there; returns the results file."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{result['name']}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.rename(out)
    write_markdown(results_dir, path)
    return out


def finish(result: dict[str, Any], started: float, out: Path, markdown: Path, log) -> None:
    """Stamp the run's duration on ``result``, save it with :func:`save` and say where."""
    result["seconds"] = time.time() - started
    path = save(result, out, markdown)
    log(f"wrote {path} and {markdown} in {result['seconds']:.0f} s")
