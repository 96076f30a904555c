"""Panoptic FPN (Kirillov, Girshick, He, Dollár, CVPR 2019) on torchvision's Mask R-CNN.

:class:`PanopticFPN` keeps a torchvision ``MaskRCNN`` as its submodule ``detector`` (so its FPN
sits at ``detector.backbone.fpn``, as in any torchvision detector) and adds the paper's semantic
branch, :class:`SemanticFPNHead`, on the FPN levels ``'0'``..``'3'`` (strides 4, 8, 16, 32). One
forward computes the features once and feeds both: ``transform -> backbone -> rpn -> roi_heads ->
postprocess`` as torchvision's ``GeneralizedRCNN`` does, plus the semantic branch on the same
features. :func:`merge_panoptic` fuses the two outputs into a panoptic map (detectron2's
heuristic). :func:`panoptic_fpn_resnet50_fpn` builds the ResNet-50 FPN model.

Semantic classes: the branch predicts ``num_stuff + 1`` classes, stuff ``0..S-1`` and index ``S``
for "any thing" (detectron2 puts "thing" at index 0 instead; here the stuff ids stay 0-based).
Semantic targets are int64 ``[H, W]`` maps with those ids and 255 for pixels to ignore.

Panoptic labelling (``T = num_things = num_classes - 1``, ``S = num_stuff``): an int64
``[H, W, 2]`` map of (class, instance) per pixel:

* a thing of detection label ``k`` (``1..T``, torchvision's labels; 0 is the background) is
  ``(k, i)`` with ``i = 1, 2, ...`` counting the placed instances of the image, all thing classes
  together, in placement (decreasing score) order;
* stuff ``s`` (``0..S-1``) is ``(T + 1 + s, 0)``;
* unassigned pixels (no instance placed, and their stuff region below ``stuff_area`` or the
  semantic argmax being "thing") are ``(0, 0)``.

So the class channel is contiguous: 0 void, ``1..T`` things, ``T+1..T+S`` stuff; a dataset maps
it to its own category ids.

Design sources (facts, not code): detectron2 ``modeling/meta_arch/panoptic_fpn.py``
(``combine_semantic_and_instance_outputs``) and ``semantic_seg.py`` (``SemSegFPNHead``), its
``Base-Panoptic-FPN.yaml`` / ``configs/common/models/panoptic_fpn.py`` (128 channels, GroupNorm,
loss weight 0.5, ignore 255) and defaults (overlap 0.5, stuff area 4096, score 0.5); mmdetection's
``PanopticFPNHead`` and ``HeuristicFusionHead`` (the same overlap rule).

Example:
    >>> import torch
    >>> model = panoptic_fpn_resnet50_fpn(num_classes=3, num_stuff=2, min_size=64, max_size=64,
    ...                                   rpn_pre_nms_top_n_test=20, rpn_post_nms_top_n_test=10).eval()
    >>> with torch.no_grad():
    ...     out = model([torch.rand(3, 40, 56)])[0]
    >>> sorted(out)
    ['boxes', 'labels', 'masks', 'panoptic', 'scores', 'sem_seg']
    >>> out["sem_seg"].shape, out["panoptic"].shape, out["panoptic"].dtype
    (torch.Size([3, 40, 56]), torch.Size([40, 56, 2]), torch.int64)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

IGNORE_INDEX = 255
"""Semantic-target value of pixels left out of the semantic loss."""

FPN_LEVELS = ("0", "1", "2", "3")
"""The torchvision FPN outputs the semantic branch reads (strides 4, 8, 16, 32)."""

FPN_STRIDES = (4, 8, 16, 32)


class SemanticFPNHead(nn.Module):
    """The semantic branch of Panoptic FPN (detectron2's ``SemSegFPNHead``).

    Per FPN level of stride ``s``: ``max(1, log2(s / 4))`` stages of Conv3x3 (no bias) ->
    GroupNorm(32) -> ReLU, each followed by ``nn.Upsample(scale_factor=2, bilinear)`` except at
    stride 4; the levels are summed at stride 4, a 1x1 convolution predicts ``num_classes``
    logits, and ``upsample`` (``nn.Upsample(scale_factor=4, bilinear)``) brings them to the input
    resolution. Every upsampling is an ``nn.Upsample`` module, so model surgery finds each one.
    Convolutions get detectron2's "MSRA fill" (Kaiming normal, fan-out, ReLU gain; zero bias).

    Args:
        in_channels: channels of each FPN level (256 in torchvision).
        num_classes: semantic classes (``num_stuff + 1`` in Panoptic FPN).
        channels: width of the branch (a multiple of 32, for GroupNorm(32)).
        strides: the strides of the levels it reads, smallest first; the smallest is the common
            stride the levels are summed at, and every stride is a power-of-two multiple of it.
        levels: the keys of those levels in the feature dict.

    Example:
        >>> import torch
        >>> head = SemanticFPNHead(16, num_classes=3, channels=32)
        >>> feats = {k: torch.rand(1, 16, 64 // s, 96 // s) for k, s in zip(FPN_LEVELS, FPN_STRIDES)}
        >>> head(feats).shape
        torch.Size([1, 3, 64, 96])
        >>> sum(isinstance(m, nn.Upsample) for m in head.modules())
        7
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 128,
        strides: Sequence[int] = FPN_STRIDES,
        levels: Sequence[str] = FPN_LEVELS,
    ) -> None:
        super().__init__()
        if channels <= 0 or channels % 32:
            raise ValueError(
                f"the semantic branch's channels must be a positive multiple of 32 (GroupNorm(32)), got {channels}"
            )
        if len(strides) != len(levels) or not strides:
            raise ValueError(f"one stride per level: got strides {list(strides)} for levels {list(levels)}")
        common = min(strides)
        self.levels = tuple(levels)
        self.common_stride = common
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            ratio = stride / common
            if ratio != 2 ** round(math.log2(ratio)):
                raise ValueError(f"stride {stride} is not a power-of-two multiple of the common stride {common}")
            stages: list[nn.Module] = []
            for k in range(max(1, round(math.log2(ratio)))):
                stages += [
                    nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False),
                    nn.GroupNorm(32, channels),
                    nn.ReLU(),
                ]
                if stride != common:
                    stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*stages))
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        self.upsample = nn.Upsample(scale_factor=common, mode="bilinear", align_corners=False)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[N, num_classes, H, W]`` at ``common_stride`` x the finest level's size."""
        x = self.scale_heads[0](features[self.levels[0]])
        for level, head in zip(self.levels[1:], self.scale_heads[1:]):
            x = x + head(features[level])
        return self.upsample(self.predictor(x))


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the pixels of ``target`` that are not ``ignore_index``.

    Zero (still connected to ``logits``, so backward works) when every pixel is ignored, where
    ``F.cross_entropy`` would give NaN.

    Example:
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> round(semantic_loss(logits, torch.tensor([[[0, 255]]])).item(), 4)
        0.6931
        >>> semantic_loss(logits, torch.full((1, 1, 2), 255)).item()
        0.0
    """
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def _semantic_targets(
    semantic: Sequence[torch.Tensor], image_sizes: Sequence[tuple[int, int]], padded: tuple[int, int]
) -> torch.Tensor:
    """The semantic maps resized (nearest) as their images were and padded with 255 to the batch size."""
    batch = torch.full(
        (len(semantic), *padded), IGNORE_INDEX, dtype=torch.int64, device=semantic[0].device if semantic else None
    )
    for i, (sem, (h, w)) in enumerate(zip(semantic, image_sizes)):
        resized = F.interpolate(sem[None, None].float(), size=(h, w), mode="nearest")[0, 0]
        batch[i, :h, :w] = resized.round().to(torch.int64)
    return batch


def _semantic_postprocess(
    logits: torch.Tensor, image_sizes: Sequence[tuple[int, int]], original_sizes: Sequence[tuple[int, int]]
) -> list[torch.Tensor]:
    """Per image: the logits with the batch padding cropped, resized (bilinear) to the original size."""
    return [
        F.interpolate(logits[i : i + 1, :, :h, :w], size=original, mode="bilinear", align_corners=False)[0]
        for i, ((h, w), original) in enumerate(zip(image_sizes, original_sizes))
    ]


def merge_panoptic(
    scores: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    sem_seg: torch.Tensor,
    *,
    num_things: int,
    overlap_threshold: float = 0.5,
    stuff_area: int = 4096,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> torch.Tensor:
    """Fuse instances and semantic logits into a panoptic map (detectron2's heuristic).

    1. Instances in decreasing score order (ties: the earlier index first); those with
       ``score < score_threshold`` are dropped. An instance's pixels are ``mask > mask_threshold``
       (a bool mask is used as is); an empty one is dropped. When more than ``overlap_threshold``
       of them are already taken (``taken / area > overlap_threshold``, detectron2's and
       mmdetection's rule; equivalently: kept when at least ``1 - overlap_threshold`` of its mask
       is still free) it is dropped, else it takes its free pixels as the next instance id.
    2. Stuff from ``sem_seg.argmax(0)``: for each stuff class ``s`` in ``0..S-1``, its pixels not
       taken by an instance are placed when there are at least ``stuff_area`` of them. The last
       semantic class (``S``, "any thing") is never placed.

    Args:
        scores: ``[K]`` detection scores.
        labels: ``[K]`` thing labels in ``1..num_things`` (torchvision's, 0 being background).
        masks: ``[K, 1, H, W]`` or ``[K, H, W]`` soft (or bool) masks at the size of ``sem_seg``.
        sem_seg: ``[S + 1, H, W]`` semantic logits (or scores): stuff ``0..S-1``, thing ``S``.
        num_things: ``T``, the number of thing classes.

    Returns:
        int64 ``[H, W, 2]``: (class, instance) per pixel: things ``(k, 1..)`` with ``k`` their
        label, stuff ``s`` as ``(T + 1 + s, 0)``, unassigned ``(0, 0)``.

    Example:
        >>> sem = torch.zeros(2, 2, 3); sem[0, :, :2] = 1; sem[1, :, 2] = 1   # stuff 0 left, "thing" right
        >>> masks = torch.zeros(1, 2, 3); masks[0, 0, 1:] = 0.9    # one thing at the top right
        >>> pan = merge_panoptic(torch.tensor([0.8]), torch.tensor([2]), masks, sem,
        ...                      num_things=2, stuff_area=1)
        >>> pan[..., 0].tolist(), pan[..., 1].tolist()
        ([[3, 2, 2], [3, 3, 0]], [[0, 1, 1], [0, 0, 0]])
    """
    if sem_seg.dim() != 3:
        raise ValueError(f"sem_seg must be [num_stuff + 1, H, W] logits, got shape {list(sem_seg.shape)}")
    height, width = sem_seg.shape[-2:]
    if masks.dim() == 4:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[-2:] != (height, width) or not len(masks) == len(scores) == len(labels):
        raise ValueError(
            f"expected K scores, K labels and [K, 1, H, W] or [K, H, W] masks at the semantic size {height}x{width}; "
            f"got {list(scores.shape)}, {list(labels.shape)} and {list(masks.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > num_things):
        raise ValueError(f"thing labels must lie in 1..{num_things}, got {sorted(set(labels.tolist()))}")
    device = sem_seg.device
    classes = torch.zeros(height, width, dtype=torch.int64, device=device)
    instances = torch.zeros(height, width, dtype=torch.int64, device=device)
    taken = torch.zeros(height, width, dtype=torch.bool, device=device)
    next_id = 1
    for k in torch.sort(scores, descending=True, stable=True).indices.tolist():
        if float(scores[k]) < score_threshold:
            break
        mask = masks[k].to(device)
        mask = mask if mask.dtype == torch.bool else mask > mask_threshold
        area = int(mask.sum())
        if area == 0:
            continue
        if int((mask & taken).sum()) / area > overlap_threshold:
            continue
        mask = mask & ~taken
        classes[mask] = int(labels[k])
        instances[mask] = next_id
        taken |= mask
        next_id += 1
    semantic = sem_seg.argmax(0)
    for s in range(sem_seg.shape[0] - 1):  # the last class, "any thing", is never placed
        region = (semantic == s) & ~taken
        area = int(region.sum())
        if area == 0 or area < stuff_area:
            continue
        classes[region] = num_things + 1 + s
    return torch.stack([classes, instances], dim=-1)


class PanopticFPN(nn.Module):
    """Panoptic FPN: a torchvision Mask R-CNN (``detector``) plus a semantic FPN branch (``semantic_head``).

    Args:
        detector: a torchvision ``MaskRCNN`` with an FPN backbone returning levels ``'0'``..``'3'``
            at strides 4..32 (as ``maskrcnn_resnet50_fpn``); its transform must pad to a multiple
            of 32 (``size_divisible``, torchvision's default), so the levels align when summed.
        num_stuff: ``S``, stuff classes; the semantic branch predicts ``S + 1`` (index ``S`` = thing).
        semantic_channels: width of the semantic branch.
        semantic_loss_weight: factor of ``loss_semantic``.
        overlap_threshold, stuff_area, score_threshold, mask_threshold: of :func:`merge_panoptic`.

    ``forward(images, targets=None)``: ``images`` a list of ``[3, H, W]`` tensors in ``[0, 1]``.

    * Training: ``targets`` is one dict per image with Mask R-CNN's keys (``boxes``, ``labels``,
      ``masks``) and ``semantic``, int64 ``[H, W]`` (stuff ``0..S-1``, ``S`` for things, 255
      ignored). Returns Mask R-CNN's loss dict plus ``loss_semantic`` (``semantic_loss_weight`` x
      cross-entropy at the padded input resolution, padding ignored).
    * Evaluation: one dict per image: Mask R-CNN's ``boxes`` ``[K, 4]``, ``labels`` ``[K]``,
      ``scores`` ``[K]``, ``masks`` ``[K, 1, H, W]`` (soft, at the original size), plus
      ``sem_seg`` (float logits ``[S + 1, H, W]`` at the original size) and ``panoptic`` (int64
      ``[H, W, 2]``, see :func:`merge_panoptic` and the module docstring for the labelling).

    Model surgery: ``transform`` (the detector's) makes the model look like a torchvision detector
    to ``find_upsamplers`` / ``swap_upsamplers`` (default example input, discovery at the image's
    own size); pass ``example_inputs=([image],)``. They find the FPN's 3 nearest x2 calls
    (``detector.backbone.fpn``), the semantic branch's 6 x2 ``nn.Upsample`` layers and its x4
    (``semantic_head.upsample``, on the ``S + 1`` logits: swapped as two x2 stages, not exact at
    swap time; ``exclude="semantic_head.upsample"`` keeps it bilinear).
    """

    def __init__(
        self,
        detector: MaskRCNN,
        *,
        num_stuff: int,
        semantic_channels: int = 128,
        semantic_loss_weight: float = 0.5,
        overlap_threshold: float = 0.5,
        stuff_area: int = 4096,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(detector, MaskRCNN):
            raise TypeError(f"detector must be a torchvision MaskRCNN, got {type(detector).__name__}")
        if num_stuff < 1:
            raise ValueError(f"num_stuff must be at least 1, got {num_stuff}")
        divisible = detector.transform.size_divisible
        if divisible % max(FPN_STRIDES):
            raise ValueError(f"the detector's transform pads to multiples of {divisible}; the semantic branch needs 32")
        self.detector = detector
        self.num_things = int(detector.roi_heads.box_predictor.cls_score.out_features) - 1
        self.num_stuff = num_stuff
        self.semantic_head = SemanticFPNHead(
            int(detector.backbone.out_channels), num_stuff + 1, channels=semantic_channels
        )
        self.semantic_loss_weight = semantic_loss_weight
        self.overlap_threshold = overlap_threshold
        self.stuff_area = stuff_area
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold

    @property
    def transform(self) -> GeneralizedRCNNTransform:
        """The detector's input transform (so tools that recognise torchvision detectors recognise this one)."""
        transform = self.detector.transform
        assert isinstance(transform, GeneralizedRCNNTransform)
        return transform

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """Losses (training) or per-image results (evaluation); see the class docstring."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode (Mask R-CNN's keys plus 'semantic')")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        semantic: list[torch.Tensor] | None = None
        detection_targets: list[dict[str, torch.Tensor]] | None = None
        if targets is not None:
            detection_targets = [{k: v for k, v in t.items() if k != "semantic"} for t in targets]
            if self.training:
                missing = [i for i, t in enumerate(targets) if "semantic" not in t]
                if missing:
                    raise ValueError(f"targets {missing} have no 'semantic' map (int64 [H, W], 255 = ignore)")
                semantic = [t["semantic"] for t in targets]
                for i, (sem, size) in enumerate(zip(semantic, original_sizes)):
                    if tuple(sem.shape) != size:
                        raise ValueError(f"target {i}: 'semantic' has shape {list(sem.shape)}, its image is {size}")
        for target in detection_targets or []:
            boxes = target["boxes"]
            if boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"target boxes must be [N, 4], got {list(boxes.shape)}")
        batch, detection_targets = self.detector.transform(images, detection_targets)
        if self.training and detection_targets is not None:
            for i, target in enumerate(detection_targets):
                boxes = target["boxes"]
                if bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                    raise ValueError(f"target {i} has a box without positive width and height: {boxes.tolist()}")
        features = self.detector.backbone(batch.tensors)
        proposals, proposal_losses = self.detector.rpn(batch, features, detection_targets)
        detections, detector_losses = self.detector.roi_heads(features, proposals, batch.image_sizes, detection_targets)
        logits = self.semantic_head(features)
        if self.training:
            assert semantic is not None
            padded = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
            sem_targets = _semantic_targets(semantic, batch.image_sizes, padded)
            losses: dict[str, torch.Tensor] = {}
            losses.update(detector_losses)
            losses.update(proposal_losses)
            losses["loss_semantic"] = self.semantic_loss_weight * semantic_loss(logits, sem_targets)
            return losses
        detections = self.detector.transform.postprocess(detections, batch.image_sizes, original_sizes)
        for result, sem_seg in zip(detections, _semantic_postprocess(logits, batch.image_sizes, original_sizes)):
            result["sem_seg"] = sem_seg
            result["panoptic"] = merge_panoptic(
                result["scores"],
                result["labels"],
                result["masks"],
                sem_seg,
                num_things=self.num_things,
                overlap_threshold=self.overlap_threshold,
                stuff_area=self.stuff_area,
                score_threshold=self.score_threshold,
                mask_threshold=self.mask_threshold,
            )
        return detections


def panoptic_fpn_resnet50_fpn(
    *,
    num_classes: int,
    num_stuff: int,
    weights_backbone: Any = None,
    trainable_backbone_layers: int | None = None,
    semantic_channels: int = 128,
    semantic_loss_weight: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area: int = 4096,
    score_threshold: float = 0.5,
    **maskrcnn_kwargs: Any,
) -> PanopticFPN:
    """Panoptic FPN with a ResNet-50 FPN: torchvision's ``maskrcnn_resnet50_fpn`` plus the semantic branch.

    Args:
        num_classes: thing classes + 1 (the background), as torchvision's ``num_classes``.
        num_stuff: stuff classes; the semantic branch predicts ``num_stuff + 1``.
        weights_backbone: the ResNet-50's weights (e.g. ``"IMAGENET1K_V1"``), ``None`` for random.
        trainable_backbone_layers: as torchvision (``None``: 3 with backbone weights, else 5).
        semantic_channels, semantic_loss_weight: of the semantic branch (detectron2: 128, 0.5).
        overlap_threshold, stuff_area, score_threshold: of :func:`merge_panoptic` (detectron2's
            defaults: 0.5, 4096, 0.5).
        **maskrcnn_kwargs: passed on to ``maskrcnn_resnet50_fpn`` (``min_size``, ``max_size``,
            ``rpn_pre_nms_top_n_train``, ``box_batch_size_per_image``, ``box_detections_per_img``,
            ...); ``weights`` defaults to ``None`` (no Mask R-CNN weights).

    Example:
        >>> model = panoptic_fpn_resnet50_fpn(num_classes=3, num_stuff=2)
        >>> model.num_things, model.num_stuff, type(model.detector.backbone.fpn).__name__
        (2, 2, 'FeaturePyramidNetwork')
    """
    maskrcnn_kwargs.setdefault("weights", None)
    detector = maskrcnn_resnet50_fpn(
        weights_backbone=weights_backbone,
        num_classes=num_classes,
        trainable_backbone_layers=trainable_backbone_layers,
        **maskrcnn_kwargs,
    )
    return PanopticFPN(
        detector,
        num_stuff=num_stuff,
        semantic_channels=semantic_channels,
        semantic_loss_weight=semantic_loss_weight,
        overlap_threshold=overlap_threshold,
        stuff_area=stuff_area,
        score_threshold=score_threshold,
    )
