"""``build_dataset`` dispatch and its config errors."""

from __future__ import annotations

import pytest

from dysample_swap.finetune.data import FORMATS, build_dataset, is_detection


def test_every_documented_format_is_registered() -> None:
    assert set(FORMATS) == {"synthetic", "folder", "voc", "ade20k", "coco", "nyu", "depth_folder", "coco_panoptic"}


@pytest.mark.parametrize(
    "task, expected",
    [("depth", "SyntheticDepth"), ("panoptic", "SyntheticPanoptic"), ("instance", "SyntheticDetection")],
)
def test_synthetic_data_follows_the_task(task: str, expected: str) -> None:
    assert type(build_dataset({"format": "synthetic", "task": task, "num_samples": 2}, "train")).__name__ == expected


def test_unknown_or_missing_format_names_the_fix() -> None:
    with pytest.raises(KeyError, match="did you mean 'ade20k'"):
        build_dataset({"format": "ade20"}, "train")
    with pytest.raises(KeyError, match="data.format: missing"):
        build_dataset({"root": "x"}, "train")


@pytest.mark.parametrize("fmt", ["folder", "voc", "ade20k", "coco", "nyu", "depth_folder", "coco_panoptic"])
def test_missing_root_is_named(fmt: str) -> None:
    with pytest.raises(KeyError, match=f"data.root: required for format '{fmt}'"):
        build_dataset({"format": fmt}, "train")


def test_is_detection() -> None:
    assert is_detection({"format": "coco"}) and is_detection({"format": "synthetic", "task": "detection"})
    assert not is_detection({"format": "synthetic"}) and not is_detection({"format": "folder"})


@pytest.mark.parametrize(
    "task, fmt, fix",
    [
        ("depth", "folder", "nyu, depth_folder or synthetic"),
        ("panoptic", "coco", "coco_panoptic or synthetic"),
        ("segmentation", "nyu", "folder, voc, ade20k or synthetic"),
        ("detection", "coco_panoptic", "coco or synthetic"),
    ],
)
def test_a_format_that_cannot_serve_the_task_is_named(task: str, fmt: str, fix: str) -> None:
    from dysample_swap.finetune.builders import data_config
    from dysample_swap.finetune.config import ConfigError, build_config

    cfg = build_config({"task": task, "data": {"format": fmt, "root": "x"}})
    with pytest.raises(
        ConfigError, match=f"data.format '{fmt}' holds .* data, not {task} data; .* use data.format {fix}$"
    ):
        data_config(cfg)
