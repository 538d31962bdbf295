"""A corpus of bad inputs, each fed to the `vaekit` command (through ``cli.main``; a few, and
all that need a memory limit, as a real subprocess).

Every bad input (a file under tests/bad_inputs/, or one generated here when it is large, empty
or carries a payload) must end in exactly one line ``vaekit: error: ...`` on stderr that names
the file or key and the problem, exit code 2, no traceback, and must leave every existing run
directory byte-for-byte as it was, with nothing else on stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_VQ, tiny_raw, write_toml
from vaekit import cli

BAD = Path(__file__).resolve().parent / "bad_inputs"
VAEKIT = [sys.executable, "-m", "vaekit"]
MEMORY_LIMIT = 3 << 30  # address space for the "huge header" cases: 10 GB cannot be allocated


def vaekit(*args, memory_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run `python -m vaekit ARGS` as a user would (one thread, wide terminal)."""
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [*VAEKIT, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        preexec_fn=limit,
    )


def vaekit_in_process(*args) -> subprocess.CompletedProcess:
    """`vaekit ARGS` through ``cli.main`` in this process: the same exit code and output as the
    command, without a new interpreter (about 2 s) per case."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# Cases also run as a real subprocess (the rest go through cli.main in-process): one per
# family, plus every case with a memory limit, which only a child process can be given.
SUBPROCESS_CASES = {
    "idx-truncated",
    "npy-object-array",
    "config-unknown-key",
    "evaluate-weights-of-another-shape",
    "traverse-a-vqvae-run",
}


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path (folders listed too)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained VAE run and a tiny trained VQ-VAE run, made by the CLI."""
    tmp = tmp_path_factory.mktemp("bad-input-runs")
    out = {}
    for name, raw in (("vae", tiny_raw()), ("vq", tiny_raw(model=TINY_VQ))):
        config = write_toml(tmp / f"{name}.toml", raw)
        proc = vaekit("train", config, "--run-dir", tmp / name)
        assert proc.returncode == 0, proc.stderr
        out[name] = tmp / name
    return out


@dataclass
class Ctx:
    """What a case may use: its own folder, the trained runs, and copies it wants watched."""

    tmp: Path
    runs: dict[str, Path]
    watched: list[Path] = field(default_factory=list)

    @property
    def new_run(self) -> Path:
        return self.tmp / "new-run"

    def train(self, config: Path, *extra: str) -> list:
        """`vaekit train CONFIG` into a fresh run directory (that must not appear)."""
        return ["train", config, "--run-dir", self.new_run, *extra]

    def train_on(self, data_path: Path | str, **model) -> list:
        """`vaekit train` of a tiny config whose data.path is ``data_path``."""
        raw = tiny_raw(data={"name": "auto", "path": str(data_path)}, model=model)
        config = write_toml(self.tmp / "user-data.toml", raw)
        return ["train", config, "--run-dir", self.new_run]

    def copy_run(self, name: str, edit: Callable[[Path], None]) -> Path:
        """A copy of a trained run, changed by ``edit``, whose bytes must then stay as they are."""
        copy = self.tmp / f"{name}-copy"
        shutil.copytree(self.runs[name], copy)
        edit(copy)
        self.watched.append(copy)
        return copy

    def write(self, name: str, data: bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list]
    expect: tuple[str, ...]  # substrings of the one error line (file or key, and the problem)
    memory_limit: int | None = None


def idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def huge_idx_folder(ctx: Ctx, dims: tuple[int, ...], gz: bool) -> Path:
    """A 16-byte IDX header claiming ``dims`` and no data, with a matching tiny labels file."""
    header = idx_header(8, dims)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    ctx.write(f"huge/{name}", gzip.compress(header) if gz else header)
    ctx.write("huge/train-labels-idx1-ubyte", idx_header(8, (1,)) + b"\0")
    return ctx.tmp / "huge"


def edit_config(pattern: str, replacement: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / "config.toml"
        text = path.read_text()
        assert pattern in text, (pattern, text)
        path.write_text(text.replace(pattern, replacement, 1))

    return edit


def truncate_all(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        found = list(run.rglob(name))
        assert found
        for path in found:
            path.write_bytes(path.read_bytes()[:100])

    return edit


def remove_all(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        for path in run.rglob(name):
            path.unlink()

    return edit


CASES = [
    # ---- IDX files (folders of MNIST-family files given as data.path)
    Case(
        "idx-truncated",
        lambda c: c.train_on(BAD / "idx_truncated"),
        ("idx_truncated/train-images-idx3-ubyte", "truncated", "160 bytes", "has 100"),
    ),
    Case(
        "idx-wrong-magic",
        lambda c: c.train_on(BAD / "idx_wrong_magic"),
        ("idx_wrong_magic/train-images-idx3-ubyte", "not an IDX file", "89 50 4e 47"),
    ),
    Case(
        "idx-gzip-corrupt",
        lambda c: c.train_on(BAD / "idx_gzip_corrupt"),
        ("train-images-idx3-ubyte.gz", "corrupt gzip stream"),
    ),
    Case(
        "idx-images-and-labels-differ-in-count",
        lambda c: c.train_on(BAD / "idx_count_mismatch"),
        ("train-images-idx3-ubyte holds 10 images", "train-labels-idx1-ubyte holds 9 labels"),
    ),
    Case(
        "idx-float-type-code",
        lambda c: c.train_on(BAD / "idx_float_images"),
        ("idx_float_images/train-images-idx3-ubyte", "expected uint8 images", "float32"),
    ),
    Case(
        "idx-unknown-type-code",
        lambda c: c.train_on(BAD / "idx_bad_type_code"),
        ("idx_bad_type_code/train-images-idx3-ubyte", "not an IDX file", "00 00 07 03"),
    ),
    Case(
        "idx-zero-images",
        lambda c: c.train_on(BAD / "idx_zero_images"),
        ("idx_zero_images/train-images-idx3-ubyte", "holds no images", "[0, 4, 4]"),
    ),
    Case(
        "idx-images-without-labels",
        lambda c: c.train_on(BAD / "idx_images_without_labels"),
        ("idx_images_without_labels", "no train labels file"),
    ),
    Case(
        "idx-extra-bytes",
        lambda c: c.train_on(BAD / "idx_extra_bytes"),
        ("idx_extra_bytes/train-images-idx3-ubyte", "4 extra bytes"),
    ),
    Case(
        "idx-header-100000x100000",
        lambda c: c.train_on(huge_idx_folder(c, (100000, 100000, 100000), gz=False)),
        ("huge/train-images-idx3-ubyte", "truncated", "1000000000000000 bytes", "has 0"),
        memory_limit=MEMORY_LIMIT,
    ),
    Case(
        "idx-header-1x100000x100000-gzip",
        lambda c: c.train_on(huge_idx_folder(c, (1, 100000, 100000), gz=True)),
        ("huge/train-images-idx3-ubyte.gz", "truncated", "10000000000 bytes", "has 0"),
        memory_limit=MEMORY_LIMIT,
    ),
    Case(
        "idx-header-beyond-memory-gzip",
        lambda c: c.train_on(huge_idx_folder(c, (100000, 100000, 100000), gz=True)),
        ("huge/train-images-idx3-ubyte.gz", "more than this machine's", "GiB of memory"),
        memory_limit=MEMORY_LIMIT,
    ),
    # ---- .npy / .npz arrays
    Case(
        "npy-nan",
        lambda c: c.train_on(BAD / "arrays/nan.npy"),
        ("arrays/nan.npy", "float images must lie in [0, 1]", "nan"),
    ),
    Case(
        "npy-negative",
        lambda c: c.train_on(BAD / "arrays/negative.npy"),
        ("arrays/negative.npy", "float images must lie in [0, 1]", "-0.5"),
    ),
    Case(
        "npy-float-above-255",
        lambda c: c.train_on(BAD / "arrays/above_255.npy"),
        ("arrays/above_255.npy", "float images must lie in [0, 1]", "300"),
    ),
    Case(
        "npy-int32-pixels",
        lambda c: c.train_on(BAD / "arrays/int32_pixels.npy"),
        ("arrays/int32_pixels.npy", "int32", "convert to uint8"),
    ),
    Case(
        "npy-one-dimensional",
        lambda c: c.train_on(BAD / "arrays/one_dimensional.npy"),
        ("arrays/one_dimensional.npy", "expected images shaped", "[10]"),
    ),
    Case(
        "npy-truncated",
        lambda c: c.train_on(BAD / "arrays/truncated.npy"),
        ("arrays/truncated.npy", "not a readable .npy file", "truncated", "640 bytes"),
    ),
    Case(
        "npy-header-100000x100000",
        lambda c: c.train_on(c.write("huge.npy", npy_header((100000, 100000, 100000)))),
        ("huge.npy", "truncated", "1000000000000000 bytes"),
        memory_limit=MEMORY_LIMIT,
    ),
    Case(
        "npy-object-array",
        lambda c: c.train_on(
            c.write("objects.npy", _saved(np.array([{"a": 1}, None], dtype=object)))
        ),
        ("objects.npy", "object arrays / pickled data are refused"),
    ),
    Case(
        "npz-empty",
        lambda c: c.train_on(BAD / "arrays/empty.npz"),
        ("arrays/empty.npz", "no image array", "found []"),
    ),
    Case(
        "npz-zero-images",
        lambda c: c.train_on(BAD / "arrays/zero_images.npz"),
        ("arrays/zero_images.npz", "holds no images"),
    ),
    Case(
        "npz-label-count",
        lambda c: c.train_on(BAD / "arrays/label_count.npz"),
        ("arrays/label_count.npz", "10 images but 9 labels"),
    ),
    Case(
        "npz-not-a-zip",
        lambda c: c.train_on(BAD / "arrays/not_a_zip.npz"),
        ("arrays/not_a_zip.npz", "not a readable .npz file"),
    ),
    # ---- image folders
    Case(
        "folder-empty",
        lambda c: c.train_on(_mkdir(c.tmp / "empty")),
        ("empty", "no .png, .jpg or .jpeg images"),
    ),
    Case(
        "folder-without-images",
        lambda c: c.train_on(BAD / "folder_without_images"),
        ("folder_without_images", "no .png, .jpg or .jpeg images"),
    ),
    Case(
        "folder-mixed-sizes-and-modes",
        lambda c: c.train_on(BAD / "folder_mixed_sizes"),
        ("folder_mixed_sizes", "images differ in size (8x8, 10x12)", "data.image_size"),
    ),
    Case(
        "folder-corrupt-png",
        lambda c: c.train_on(BAD / "png_corrupt"),
        ("png_corrupt/bad.png", "cannot read image: damaged or truncated PNG data"),
    ),
    Case(
        "folder-truncated-png",
        lambda c: c.train_on(BAD / "png_truncated"),
        ("png_truncated/cut.png", "cannot read image: damaged or truncated PNG data"),
    ),
    Case(
        "folder-eps-named-png",
        lambda c: c.train_on(BAD / "png_holding_eps"),
        ("png_holding_eps/x.png", "not a PNG or JPEG file"),
    ),
    Case(
        "folder-one-1x1-image",
        lambda c: c.train_on(BAD / "folder_one_1x1_image"),
        ("folder_one_1x1_image", "1 image(s) are too few"),
    ),
    Case(
        "folder-1x1-images-for-a-conv-net",
        lambda c: c.train_on(BAD / "folder_1x1_images", arch="conv"),
        ("model.channels", "divisible by 4", "1x1"),
    ),
    Case(
        "data-path-missing",
        lambda c: c.train_on(c.tmp / "nowhere"),
        ("data.path", "nowhere", "no such file or folder"),
    ),
    Case(
        "data-path-a-device",
        lambda c: c.train_on("/dev/null"),
        ("data.path", "/dev/null", "not a regular file or folder"),
    ),
    Case(
        "data-path-a-single-image",
        lambda c: c.train_on(BAD / "png_corrupt/00.png"),
        ("data.path", "00.png", "a single image"),
    ),
    Case(
        "data-path-a-text-file",
        lambda c: c.train_on(BAD / "folder_without_images/notes.txt"),
        ("notes.txt", "expected a .npy or .npz file"),
    ),
    # ---- config files and --set
    Case(
        "config-unknown-key",
        lambda c: c.train(BAD / "configs/unknown_key.toml"),
        ("configs/unknown_key.toml", "model.latnt_dim", "unknown key"),
    ),
    Case(
        "config-unknown-section",
        lambda c: c.train(BAD / "configs/unknown_section.toml"),
        ("configs/unknown_section.toml", "optimizer", "unknown key"),
    ),
    Case(
        "config-wrong-type",
        lambda c: c.train(BAD / "configs/wrong_type.toml"),
        ("configs/wrong_type.toml", "train.epochs", "valid integer"),
    ),
    Case(
        "config-negative-batch-size",
        lambda c: c.train(BAD / "configs/negative_size.toml"),
        ("configs/negative_size.toml", "train.batch_size", "greater than 0"),
    ),
    Case(
        "config-negative-hidden-width",
        lambda c: c.train(BAD / "configs/negative_hidden.toml"),
        ("configs/negative_hidden.toml", "model.hidden must hold positive sizes"),
    ),
    Case(
        "config-infinite-lr",
        lambda c: c.train(BAD / "configs/infinite_lr.toml"),
        ("configs/infinite_lr.toml", "train.lr", "finite number"),
    ),
    Case(
        "config-invalid-toml",
        lambda c: c.train(BAD / "configs/invalid.toml"),
        ("configs/invalid.toml", "not valid TOML"),
    ),
    Case(
        "config-not-utf8",
        lambda c: c.train(BAD / "configs/not_utf8.toml"),
        ("configs/not_utf8.toml", "not valid TOML", "not UTF-8"),
    ),
    Case(
        "config-nested-too-deeply",
        lambda c: c.train(c.write("deep.toml", b"x = " + b"[" * 5000 + b"]" * 5000)),
        ("deep.toml", "nested too deeply"),
    ),
    Case(
        "config-name-and-path",
        lambda c: c.train(BAD / "configs/name_and_path.toml"),
        ("configs/name_and_path.toml", "set either data.name or data.path"),
    ),
    Case(
        "config-kind-and-arch-disagree",
        lambda c: c.train(BAD / "configs/kind_arch_mismatch.toml"),
        ("configs/kind_arch_mismatch.toml", "model.kind = 'vqvae' goes with"),
    ),
    Case(
        "config-is-a-directory",
        lambda c: c.train(BAD / "configs"),
        ("configs", "is a directory"),
    ),
    Case(
        "config-missing",
        lambda c: c.train(c.tmp / "absent.toml"),
        ("absent.toml", "no such config file"),
    ),
    Case(
        "set-without-equals",
        lambda c: c.train(BAD / "configs/unknown_key.toml", "--set", "model.latent_dim"),
        ("--set 'model.latent_dim'", "expected KEY=VALUE"),
    ),
    Case(
        "set-unterminated-list",
        lambda c: c.train(BAD / "configs/unknown_key.toml", "--set", "model.hidden=[64,"),
        ("--set 'model.hidden=[64,'", "value is not valid TOML"),
    ),
    Case(
        "set-empty-key-part",
        lambda c: c.train(BAD / "configs/unknown_key.toml", "--set", "model..latent_dim=3"),
        ("--set 'model..latent_dim=3'", "empty part in key"),
    ),
    Case(
        "set-into-a-value",
        lambda c: c.train(BAD / "configs/unknown_key.toml", "--set", "data.name.x=1"),
        ("--set 'data.name.x=1'", "'name' is not a section"),
    ),
    Case(
        "set-unknown-key",
        lambda c: c.train(c.runs["vae"] / "config.toml", "--set", "model.latnt_dim=3"),
        ("config.toml (with --set overrides)", "model.latnt_dim", "unknown key"),
    ),
    # ---- run directories
    Case(
        "traverse-a-vqvae-run",
        lambda c: ["traverse", c.runs["vq"]],
        ("traversals", "this run is a VQ-VAE"),
    ),
    Case(
        "codes-of-a-vae-run",
        lambda c: ["codes", c.runs["vae"]],
        ("codes", "this run is a VAE"),
    ),
    Case(
        "train-prior-of-a-vae-run",
        lambda c: ["train-prior", c.runs["vae"]],
        ("a 'vae' model", "train-prior fits the prior over the codes of a VQ-VAE"),
    ),
    Case(
        "evaluate-weights-of-another-shape",
        lambda c: ["evaluate", c.copy_run("vae", edit_config("latent_dim = 4", "latent_dim = 5"))],
        ("model.safetensors", "weights do not fit the model in config.toml"),
    ),
    Case(
        "evaluate-a-folder-that-is-no-run",
        lambda c: ["evaluate", _mkdir(c.tmp / "not-a-run", files={"notes.txt": b"hi"})],
        ("not-a-run", "not a vaekit run", "config.toml is missing"),
    ),
    Case(
        "evaluate-a-missing-run",
        lambda c: ["evaluate", c.tmp / "no-such-run"],
        ("no-such-run", "no such run directory"),
    ),
    Case(
        "sample-a-run-whose-config-is-invalid",
        lambda c: ["sample", c.copy_run("vae", edit_config("[model]", "[model\n"))],
        ("config.toml", "not valid TOML"),
    ),
    Case(
        "sample-a-run-whose-config-is-inconsistent",
        lambda c: ["sample", c.copy_run("vae", edit_config('kind = "vae"', 'kind = "vqvae"'))],
        ("config.toml", "model.kind = 'vqvae' goes with model.arch = 'resnet'"),
    ),
    Case(
        "sample-a-run-with-truncated-weights",
        lambda c: ["sample", c.copy_run("vae", truncate_all("model.safetensors"))],
        ("model.safetensors",),
    ),
    Case(
        "resume-a-run-without-state",
        lambda c: [
            "train",
            "--resume",
            c.copy_run("vae", remove_all("state.pt")),
            "--set",
            "train.epochs=4",
        ],
        ("state.pt",),
    ),
    Case(
        "resume-with-a-config-too",
        lambda c: ["train", BAD / "configs/unknown_key.toml", "--resume", c.runs["vae"]],
        ("--resume RUN continues RUN with its own config",),
    ),
]


def _saved(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _mkdir(path: Path, files: dict[str, bytes] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (path / name).write_bytes(data)
    return path


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.id for case in CASES} >= SUBPROCESS_CASES


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_no_run(case, runs, tmp_path, monkeypatch):
    ctx = Ctx(tmp_path, runs)
    argv = case.argv(ctx)
    watched = [*runs.values(), *ctx.watched]
    before = {path: tree_digest(path) for path in watched}

    if case.memory_limit is not None or case.id in SUBPROCESS_CASES:
        proc = vaekit(*argv, memory_limit=case.memory_limit)
    else:
        monkeypatch.setenv("COLUMNS", "400")
        proc = vaekit_in_process(*argv)

    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vaekit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert lines == errors, lines  # the error line is all the user sees
    for needle in case.expect:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    assert {path: tree_digest(path) for path in watched} == before
    assert not ctx.new_run.exists(), "a failed train left a run directory behind"


# --------------------------------------------------------------------------- --debug


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    proc = vaekit("--debug", "train", tmp_path / "absent.toml")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "vaekit.errors.ConfigError" in proc.stderr and "absent.toml" in proc.stderr


def test_help_documents_debug():
    assert "--debug" in vaekit("--help").stdout


BOOM = (
    "import sys, vaekit.cli as c\n"
    "def boom(args):\n"
    "    raise RuntimeError('first line\\nsecond line')\n"
    "c.cmd_data_list = boom\n"
    "sys.exit(c.main(sys.argv[1:]))\n"
)


def test_unexpected_exception_is_one_line_exit_1():
    proc = subprocess.run(
        [sys.executable, "-c", BOOM, "data", "list"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "vaekit: internal error: RuntimeError: first line; second line "
        "(rerun with --debug for the traceback)\n"
    )


def test_unexpected_exception_with_debug_shows_the_traceback():
    proc = subprocess.run(
        [sys.executable, "-c", BOOM, "--debug", "data", "list"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RuntimeError" in proc.stderr and "internal error" not in proc.stderr


def test_main_in_process(monkeypatch, capsys):
    def boom(args):
        raise ZeroDivisionError()

    monkeypatch.setattr(cli, "cmd_data_list", boom)
    assert cli.main(["data", "list"]) == 1
    assert capsys.readouterr().err == (
        "vaekit: internal error: ZeroDivisionError: (no message) "
        "(rerun with --debug for the traceback)\n"
    )
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "data", "list"])


def test_multi_line_user_error_is_joined_on_one_line(monkeypatch, capsys):
    from vaekit.errors import DataError

    def fail(args):
        raise DataError("x.npz: first\n  second")

    monkeypatch.setattr(cli, "cmd_data_list", fail)
    assert cli.main(["data", "list"]) == 2
    assert capsys.readouterr().err == "vaekit: error: x.npz: first; second\n"


# --------------------------------------------------------------------------- accepted, documented


def test_mixed_sizes_and_modes_become_one_rgb_size_with_image_size():
    """The folder refused above loads once data.image_size is set: resized, and RGB throughout."""
    from vaekit.config import DataConfig
    from vaekit.data import load_dataset

    cfg = DataConfig(name="auto", path=BAD / "folder_mixed_sizes", image_size=8, val_fraction=0)
    train = load_dataset(cfg, "train")
    test = load_dataset(cfg, "test")
    assert len(train) + len(test) == 4
    assert train.shape == (3, 8, 8) and test.shape == (3, 8, 8)


def test_files_that_are_not_images_are_ignored_beside_images(tmp_path):
    from vaekit.data.formats import read_image_folder

    for png in sorted((BAD / "png_corrupt").glob("0*.png")):
        shutil.copy(png, tmp_path / png.name)
    for other in (BAD / "folder_without_images").iterdir():
        shutil.copy(other, tmp_path / other.name)
    images, labels, classes = read_image_folder(tmp_path)
    assert len(images) == 10 and labels is None and classes == []
