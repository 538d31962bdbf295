"""Fuzzing with hypothesis: whatever the bytes, a reader loads them or raises vaekit's own error.

The readers (IDX plain and gzip, .npy/.npz, image folders) and the config loader face files
from anywhere. For each, any input either loads or raises a ``VaekitError`` subclass whose
message is one line; anything else (a numpy ValueError, a PIL struct.error, a RecursionError
from a deeply nested TOML array) is a bug. Example counts are kept per test and printed at the
end of the module (about 5,900 examples, 25-35 s on 2 cores).
"""

from __future__ import annotations

import collections
import gzip
import io
import math
import os
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaekit.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
)
from vaekit.data.formats import (
    IDX_DTYPES,
    idx_header,
    read_array_file,
    read_idx,
    read_image_folder,
)
from vaekit.errors import DataError, VaekitError

EXAMPLES = collections.Counter()


# VAEKIT_FUZZ_SCALE=10 runs ten times the examples (a deeper search, minutes instead of seconds).
SCALE = float(os.environ.get("VAEKIT_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    """Settings of one fuzz test: n examples, no deadline, no example database on disk."""
    return settings(
        max_examples=max(1, round(n * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    """Print how many examples each fuzz test ran (pytest -q shows it at the end)."""
    yield
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    lines = [f"fuzz examples: {sum(EXAMPLES.values())} in all"]
    lines += [f"  {name}: {count}" for name, count in sorted(EXAMPLES.items())]
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def scratch():
    """One folder for the whole module: hypothesis reruns a test body many times."""
    with tempfile.TemporaryDirectory(prefix="vaekit-fuzz-") as folder:
        yield Path(folder)


def loads_or_vaekit_error(func, *args):
    """Call a reader; return its result, or None after a one-line VaekitError."""
    try:
        return func(*args)
    except VaekitError as err:
        assert "\n" not in str(err), f"multi-line error: {err!r}"
        assert str(err), "empty error message"
        return None


# --------------------------------------------------------------------------- IDX


def idx_bytes(code: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body


@fuzz(800)
@given(data=st.binary(max_size=600), gz=st.booleans())
def test_idx_reader_on_arbitrary_bytes(scratch, data, gz):
    EXAMPLES["idx arbitrary bytes"] += 1
    path = scratch / "any-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    out = loads_or_vaekit_error(read_idx, path)
    if out is not None:
        assert isinstance(out, np.ndarray)
    loads_or_vaekit_error(idx_header, path)


@fuzz(600)
@given(
    code=st.one_of(st.sampled_from(sorted(IDX_DTYPES)), st.integers(0, 255)),
    dims=st.lists(
        st.one_of(st.integers(0, 12), st.sampled_from([100000, 2**31, 2**32 - 1])),
        min_size=1,
        max_size=4,
    ),
    slack=st.integers(-40, 40),
    gz=st.booleans(),
    data=st.data(),
)
def test_idx_reader_on_valid_headers_with_random_bodies(scratch, code, dims, slack, gz, data):
    """A valid header with a body of random length: loads exactly when the sizes agree."""
    EXAMPLES["idx structured headers"] += 1
    dims = tuple(dims)
    dtype = IDX_DTYPES.get(code)
    expected = math.prod(dims) * dtype.itemsize if dtype is not None else 64
    size = max(0, min(expected, 4096) + slack)
    body = data.draw(st.binary(min_size=size, max_size=size), label="body")
    raw = idx_bytes(code, dims, body)
    path = scratch / "structured-idx"
    path.write_bytes(gzip.compress(raw, compresslevel=1) if gz else raw)
    out = loads_or_vaekit_error(read_idx, path)
    possible = dtype is not None and math.prod(d for d in dims if d) * dtype.itemsize < 2**63
    should_load = possible and len(body) == expected
    assert (out is not None) == should_load, (code, dims, len(body), expected)
    if out is not None:
        assert out.shape == dims
        assert out.dtype == dtype.newbyteorder("=")
        np.testing.assert_array_equal(out, np.frombuffer(body, dtype=dtype).reshape(dims))


# --------------------------------------------------------------------------- .npy / .npz


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


VALID_NPZ = _npz(
    {
        "images": np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6),
        "labels": np.arange(4, dtype=np.int64),
    }
)
VALID_NPY = _npy(np.linspace(0, 1, 3 * 5 * 5, dtype=np.float32).reshape(3, 5, 5))


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """A valid file with a few bytes overwritten, then maybe truncated or extended."""

    @st.composite
    def build(draw):
        blob = bytearray(valid)
        for _ in range(draw(st.integers(0, 6))):
            i = draw(st.integers(0, len(blob) - 1))
            blob[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(blob)))
        tail = draw(st.binary(max_size=20))
        return bytes(blob[:cut]) + tail if draw(st.booleans()) else bytes(blob)

    return build()


ARRAY_BYTES = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=300).map(lambda b: b"\x93NUMPY" + b),
    st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b),
    mutated(VALID_NPY),
    mutated(VALID_NPZ),
)


@fuzz(900)
@given(data=ARRAY_BYTES, suffix=st.sampled_from([".npy", ".npz"]))
def test_array_reader_on_arbitrary_and_mutated_bytes(scratch, data, suffix):
    EXAMPLES["npy/npz bytes and mutations"] += 1
    path = scratch / f"arrays{suffix}"
    path.write_bytes(data)
    out = loads_or_vaekit_error(read_array_file, path)
    if out is not None:
        images, labels = out
        assert images.dtype == np.uint8 and images.ndim == 4
        assert labels is None or (labels.dtype == np.int64 and len(labels) == len(images))


DTYPES = st.sampled_from(
    ["u1", "i1", "<i2", ">i4", "<f4", ">f8", "f2", "?", "c8", "U3", "S2", "V4", "M8[s]", "O"]
)


@fuzz(500)
@given(
    dtype=DTYPES,
    shape=st.lists(
        st.one_of(st.integers(0, 6), st.sampled_from([100000, 2**40])), min_size=0, max_size=5
    ),
    slack=st.integers(-30, 30),
    key=st.sampled_from(["images", "x", "data", "labels", "other"]),
    container=st.sampled_from(["npy", "npz", "npz-deflated"]),
    data=st.data(),
)
def test_array_reader_on_valid_headers_with_random_bodies(
    scratch, dtype, shape, slack, key, container, data
):
    """A real .npy header (any dtype and shape, objects included) before random bytes."""
    EXAMPLES["npy/npz structured headers"] += 1
    dtype = np.dtype(dtype)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)}
    )  # fmt: skip
    expected = math.prod(shape) * dtype.itemsize
    size = max(0, min(expected, 2048) + slack)
    npy = header.getvalue() + data.draw(st.binary(min_size=size, max_size=size), label="body")
    if container == "npy":
        path = scratch / "structured.npy"
        path.write_bytes(npy)
    else:
        path = scratch / "structured.npz"
        method = zipfile.ZIP_DEFLATED if container == "npz-deflated" else zipfile.ZIP_STORED
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            archive.writestr(f"{key}.npy", npy)
    if dtype.hasobject:  # refused from the header, before numpy sees the body
        with pytest.raises(DataError, match="object arrays / pickled data are refused"):
            read_array_file(path)
        return
    out = loads_or_vaekit_error(read_array_file, path)
    if out is not None:
        assert out[0].dtype == np.uint8 and out[0].ndim == 4


# --------------------------------------------------------------------------- image folders


def _encoded(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    channels = {"L": None, "RGB": 3, "RGBA": 4}[mode]
    shape = (size[1], size[0]) if channels is None else (size[1], size[0], channels)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(buf, fmt)
    return buf.getvalue()


VALID_PNG = _encoded("RGBA", (7, 5), "PNG")
VALID_JPEG = _encoded("RGB", (9, 8), "JPEG")
OTHER_FORMATS = [_encoded("L", (4, 4), fmt) for fmt in ("GIF", "BMP", "TIFF", "WEBP", "PPM")]

IMAGE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=200).map(lambda b: b"\xff\xd8\xff" + b),
    mutated(VALID_PNG),
    mutated(VALID_JPEG),
    st.sampled_from(OTHER_FORMATS),
)


@fuzz(900)
@given(data=IMAGE_BYTES)
def test_image_folder_reader_on_arbitrary_bytes(scratch, data):
    EXAMPLES["image folder x.png"] += 1
    folder = scratch / "images"
    folder.mkdir(exist_ok=True)
    (folder / "x.png").write_bytes(data)
    out = loads_or_vaekit_error(read_image_folder, folder)
    if out is not None:
        (image,), labels, classes = out
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] in (1, 3)
        assert labels is None and classes == []


def test_other_image_formats_named_png_are_refused(tmp_path):
    """Only the PNG and JPEG decoders run, whatever a file's content says it is."""
    for i, blob in enumerate(OTHER_FORMATS):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "x.png").write_bytes(blob)
        with pytest.raises(DataError, match=r"x.png: cannot read image: not a PNG or JPEG file"):
            read_image_folder(folder)


# --------------------------------------------------------------------------- configs

SECTIONS = ["data", "model", "objective", "train", "prior", "quantizer", "image_shape", "other"]


def _schema_keys() -> list[str]:
    """Every key of every config section (to hit validation, not just "unknown key")."""
    keys = set()
    for name, field in Config.model_fields.items():
        keys.add(name)
        model = field.annotation
        for sub_name, sub in getattr(model, "model_fields", {}).items():
            keys.add(sub_name)
            keys.update(getattr(sub.annotation, "model_fields", {}))
    return sorted(keys)


SCHEMA_KEYS = _schema_keys()
TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["auto", "sprites", "mlp", "conv", "resnet", "vqvae", "vae", "bernoulli"]),
    st.dates(),
    st.datetimes(),
    st.times(),
)
TOML_KEYS = st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(min_size=1, max_size=8))
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(TOML_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)
CONFIG_DICTS = st.dictionaries(
    st.one_of(st.sampled_from(SECTIONS), st.text(min_size=1, max_size=8)),
    st.one_of(st.dictionaries(TOML_KEYS, TOML_VALUES, max_size=6), TOML_VALUES),
    max_size=5,
)


@fuzz(800)
@given(raw=CONFIG_DICTS)
def test_config_from_dict_returns_a_config_or_config_error(raw):
    EXAMPLES["config_from_dict"] += 1
    out = loads_or_vaekit_error(config_from_dict, raw, "fuzz.toml")
    assert out is None or isinstance(out, Config)


TOML_TEXT = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    CONFIG_DICTS.map(lambda raw: _dumps_or_empty(raw)),
    st.integers(1, 3000).map(lambda n: "x = " + "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "x = " + "{a = " * n + "1" + "}" * n),
)


def _dumps_or_empty(raw: dict) -> str:
    try:
        return tomli_w.dumps(raw)
    except (TypeError, ValueError):  # tomli_w refuses some values (e.g. lists of mixed tables)
        return ""


@fuzz(800)
@given(
    text=TOML_TEXT, raw_bytes=st.booleans(), overrides=st.lists(st.text(max_size=30), max_size=3)
)
def test_load_config_returns_a_config_or_config_error(scratch, text, raw_bytes, overrides):
    EXAMPLES["load_config"] += 1
    path = scratch / "fuzz.toml"
    path.write_bytes(
        text.encode("latin-1", "replace") if raw_bytes else text.encode("utf-8", "surrogatepass")
    )
    out = loads_or_vaekit_error(load_config, path, [o for o in overrides if "\0" not in o])
    assert out is None or isinstance(out, Config)


@fuzz(300)
@given(overrides=st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_overrides_apply_or_raise_config_error(overrides):
    EXAMPLES["apply_overrides"] += 1
    raw = {"data": {"name": "sprites"}, "model": {"quantizer": {}}}
    out = loads_or_vaekit_error(apply_overrides, raw, overrides)
    assert out is None or isinstance(out, dict)
