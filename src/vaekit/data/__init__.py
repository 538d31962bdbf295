"""Datasets as uint8 tensors in memory: readers, the catalog, procedural sprites, batching."""

from vaekit.data.catalog import CATALOG, download, locate
from vaekit.data.formats import read_idx
from vaekit.data.pipeline import (
    ImageData,
    iterate_batches,
    load_dataset,
    resolve_name,
    to_model_input,
)
from vaekit.data.sprites import make_sprites

__all__ = [
    "CATALOG",
    "ImageData",
    "download",
    "iterate_batches",
    "load_dataset",
    "locate",
    "make_sprites",
    "read_idx",
    "resolve_name",
    "to_model_input",
]
