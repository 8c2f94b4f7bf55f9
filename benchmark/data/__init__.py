"""Datasets with a planted watermark shortcut: procedural cats/dogs or real photos, stamped and cached."""

from benchmark.data.folders import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    load_image,
    load_image_folder,
    load_images,
    load_kaggle_folder,
    load_oxford_pet,
)
from benchmark.data.procedural import CLASS_NAMES, SHORTCUT_CLASS, generate_procedural
from benchmark.data.watermark import WatermarkSpec, mark_size, stamp
from benchmark.data.world import (
    BIASED,
    CONTROL,
    SOURCES,
    BiasSpec,
    DatasetCacheWarning,
    DataSpec,
    Split,
    World,
    build_world,
    world_key,
)

__all__ = [
    "BIASED",
    "CLASS_NAMES",
    "CONTROL",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "SHORTCUT_CLASS",
    "SOURCES",
    "BiasSpec",
    "DataSpec",
    "DatasetCacheWarning",
    "Split",
    "WatermarkSpec",
    "World",
    "build_world",
    "generate_procedural",
    "load_image",
    "load_image_folder",
    "load_images",
    "load_kaggle_folder",
    "load_oxford_pet",
    "mark_size",
    "stamp",
    "world_key",
]
