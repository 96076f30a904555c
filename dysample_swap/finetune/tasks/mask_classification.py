"""Mask classification models as semantic segmenters: transformers' ``MaskFormerForInstanceSegmentation``
and ``Mask2FormerForUniversalSegmentation``.

They predict ``Q`` masks and a class (or "no object") for each, not per-pixel logits. As the
MaskFormer papers train them for semantic segmentation (Table 5 of the DySample paper uses MaskFormer
on ADE20K):

* **loss**: the model's own (Hungarian matching, class cross-entropy, mask sigmoid-CE and dice),
  from labels built out of the semantic mask as transformers' image processors build them: one
  binary mask and class per class present in the image. Ignored pixels belong to no mask, so they
  count as background of every mask, as with the image processors (``ignore_index``);
* **prediction**: the model's own semantic post-processing
  (``MaskFormerImageProcessor.post_process_semantic_segmentation`` /
  ``Mask2FormerImageProcessor``'s): per pixel, the class with the highest
  ``sum_q softmax(class_q)[c] * sigmoid(mask_q)``, at the image size.

Example:
    >>> import torch
    >>> masks, classes = semantic_to_mask_labels(torch.tensor([[[0, 2], [2, 255]]]), ignore_index=255)
    >>> classes[0].tolist(), masks[0].tolist()
    ([0, 2], [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
"""

from __future__ import annotations

import functools
from typing import Any

import torch

#: transformers ``model_type`` of the mask classification models, and their image processor class.
PROCESSORS = {"maskformer": "MaskFormerImageProcessor", "mask2former": "Mask2FormerImageProcessor"}


def _config(model: torch.nn.Module) -> Any:
    return getattr(getattr(model, "module", model), "config", None)  # DDP wraps the model


def is_mask_classifier(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the model a DDP wrapper holds) is a transformers MaskFormer / Mask2Former.

    Example:
        >>> is_mask_classifier(torch.nn.Conv2d(3, 3, 1))
        False
    """
    return getattr(_config(model), "model_type", None) in PROCESSORS


def semantic_to_mask_labels(masks: torch.Tensor, ignore_index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image, the binary masks ``float [K, H, W]`` and classes ``long [K]`` of the classes present.

    Example:
        >>> m, c = semantic_to_mask_labels(torch.full((1, 2, 2), 255), ignore_index=255)
        >>> m[0].shape, c[0].tolist()
        (torch.Size([0, 2, 2]), [])
    """
    mask_labels, class_labels = [], []
    for semantic in masks:
        classes = torch.unique(semantic)
        classes = classes[classes != ignore_index]
        mask_labels.append((semantic[None] == classes[:, None, None]).float())
        class_labels.append(classes.long())
    return mask_labels, class_labels


def mask_classification_loss(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """The model's own loss on labels built from the semantic masks ``[N, H, W]``.

    Example:
        >>> # mask_classification_loss(maskformer, images, masks, ignore_index=255).backward()
    """
    mask_labels, class_labels = semantic_to_mask_labels(masks, ignore_index)
    if all(len(classes) == 0 for classes in class_labels):  # nothing to match: a zero that keeps the graph (DDP)
        output = model(pixel_values=images)
        return (output.class_queries_logits.float().sum() + output.masks_queries_logits.float().sum()) * 0.0
    output = model(pixel_values=images, mask_labels=mask_labels, class_labels=class_labels)
    return output.loss.float()


@functools.cache
def _processor(name: str) -> Any:
    """One image processor per class (built once, not per evaluation batch)."""
    import transformers

    return getattr(transformers, name)()


def semantic_prediction(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class index per pixel ``[N, H, W]`` by the model's image processor's semantic post-processing.

    Example:
        >>> # semantic_prediction(maskformer.eval(), images).shape == images[:, 0].shape
    """
    processor = _processor(PROCESSORS[_config(model).model_type])
    output = model(pixel_values=images)
    maps = processor.post_process_semantic_segmentation(output, target_sizes=[tuple(images.shape[-2:])] * len(images))
    return torch.stack(maps).long()
