"""Monocular depth estimation: batches ``(images [N,3,H,W] ImageNet-normalised, depth [N,H,W])``,
depth in metres with 0 where nothing was measured.

The model may return depth ``[N, 1, H, W]`` or ``[N, H, W]``, a dict with ``"out"`` or
``"predicted_depth"``, or a transformers output with ``predicted_depth``
(``DPTForDepthEstimation``, ``DepthAnythingForDepthEstimation``, ``GLPNForDepthEstimation``), at
any resolution: it is resized to the ground truth bilinearly, as the Monocular-Depth-Estimation-Toolbox
does before its loss and its metrics.

The depth is the model's output through ``max(x, 0) + min_depth``: what the toolbox's depth heads
compute (``ReLU`` then ``+ min_depth``), so that every prediction has a logarithm. transformers'
depth heads end in a plain ReLU (the maximum changes nothing there) and smp models in a linear
layer; a clamp at ``min_depth`` instead would stop every gradient while a freshly initialised
head still outputs ~0.

Loss: the toolbox's scale-invariant log loss (``SigLoss``, Eigen et al. 2014, as the toolbox trains
DepthFormer with): over the batch's pixels with a measurement, ``g = log(pred) - log(gt)`` and
``loss = sqrt(var(g) + 0.15 * mean(g) ** 2)`` (``var`` unbiased, as ``torch.var``).

Evaluation: :class:`~dysample_swap.finetune.metrics_depth.DepthMetrics` over ``[min_depth,
max_depth]``; for NYU (``eval_crop="eigen"``) only the Eigen crop counts: rows 45..470 and
columns 41..600 of the 480 x 640 frame (the toolbox's ``eigen_crop``; other frame sizes get the
same fractions).

Example:
    >>> import torch
    >>> task = DepthTask(min_depth=1e-3, max_depth=10.0)
    >>> images, depth = torch.zeros(1, 3, 4, 4), torch.full((1, 4, 4), 2.0)
    >>> class Half(torch.nn.Module):
    ...     def forward(self, x): return torch.ones(x.shape[0], 1, 2, 2)    # 1 m everywhere, half size
    >>> round(float(task.loss(Half(), (images, depth))), 4)    # sqrt(0.15) * |log 1.001 - log 2|
    0.2681
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib
import torch
import torch.nn.functional as F

from dysample_swap.finetune.data.nyu import eigen_crop_mask
from dysample_swap.finetune.tasks.common import normalized_to_uint8


def depth_output(output: Any) -> torch.Tensor:
    """The depth map ``[N, 1, H, W]`` in a depth model's output.

    Example:
        >>> depth_output({"predicted_depth": torch.ones(2, 5, 6)}).shape
        torch.Size([2, 1, 5, 6])
    """
    if not isinstance(output, torch.Tensor):
        if isinstance(output, dict):
            found = output.get("predicted_depth", output.get("out"))
        else:
            found = getattr(output, "predicted_depth", None)
        if found is None:
            raise TypeError(
                f"depth model returned {type(output).__name__} without a depth map; expected a tensor "
                "[N, 1, H, W] or [N, H, W], {'out': ...}, or an output with predicted_depth (transformers)"
            )
        output = found
    if output.dim() == 3:
        output = output.unsqueeze(1)
    if output.dim() != 4 or output.shape[1] != 1:
        raise ValueError(
            f"depth model must predict one channel, [N, 1, H, W] or [N, H, W]; got {tuple(output.shape)}. "
            "For an smp model put classes=1 in model.spec"
        )
    return output


def silog_loss(
    pred: torch.Tensor, target: torch.Tensor, min_depth: float = 1e-3, variance_focus: float = 0.15
) -> torch.Tensor:
    """The toolbox's scale-invariant log loss over the pixels with ``target > 0`` (see the module docstring).

    ``pred`` (positive; clamped at ``min_depth`` as a guard) and ``target`` are ``[N, H, W]``
    (same size); a batch without a measured pixel gives a zero that keeps the graph.

    Example:
        >>> pred, target = torch.tensor([[[1.0, 2.0, 5.0]]]), torch.tensor([[[2.0, 4.0, 0.0]]])
        >>> round(float(silog_loss(pred, target)), 4)    # g = -log 2 twice: var 0, sqrt(0.15) * log 2
        0.2685
    """
    valid = target > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    g = torch.log(pred[valid].float().clamp(min=min_depth)) - torch.log(target[valid].float())
    variance = g.var() if g.numel() > 1 else g.new_zeros(())
    return torch.sqrt(variance + variance_focus * g.mean() ** 2)


class DepthTask:
    """Monocular depth estimation (metres): SigLoss, :class:`DepthMetrics`, colour-mapped pictures.

    Example:
        >>> t = DepthTask(1e-3, 10.0, eval_crop="eigen")
        >>> t.main_metric, t.num_classes
        ('abs_rel', 1)
    """

    name = "depth"
    main_metric = "abs_rel"
    curve_metrics = ("abs_rel", "delta1", "rmse")
    collate: Callable[[list], Any] | None = None
    num_classes = 1

    def __init__(self, min_depth: float, max_depth: float, eval_crop: str | None = None) -> None:
        if eval_crop not in (None, "eigen"):
            raise ValueError(f"eval_crop must be None or 'eigen', got {eval_crop!r}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.eval_crop = eval_crop
        self.class_names = ["depth"]

    def example_inputs(self, dataset: Any) -> torch.Tensor:
        """One image of ``dataset`` as a ``[1, 3, H, W]`` batch (for swapping upsamplers).

        Example:
            >>> DepthTask(1e-3, 10.0).example_inputs([(torch.zeros(3, 4, 4), None)]).shape
            torch.Size([1, 3, 4, 4])
        """
        return dataset[0][0].unsqueeze(0)

    def to_device(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Move a batch to ``device``.

        Example:
            >>> x, y = DepthTask(1e-3, 10.0).to_device((torch.zeros(1), torch.ones(1)), torch.device("cpu"))
        """
        images, depth = batch
        return images.to(device, non_blocking=True), depth.to(device, non_blocking=True)

    def batch_size(self, batch: Any) -> int:
        """Number of images in a batch.

        Example:
            >>> DepthTask(1e-3, 10.0).batch_size((torch.zeros(5, 3, 2, 2), None))
            5
        """
        return len(batch[0])

    def _depth(self, model: torch.nn.Module, images: torch.Tensor, size: torch.Size) -> torch.Tensor:
        depth = depth_output(model(images)).float()
        if depth.shape[-2:] != size:
            depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
        return depth[:, 0].clamp(min=0.0) + self.min_depth

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """SigLoss (float32) of the depth (``max(output, 0) + min_depth``) resized to the ground truth.

        Example:
            >>> t = DepthTask(1e-3, 10.0)
            >>> float(t.loss(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))).detach())
            0.0
        """
        images, depth = batch
        return silog_loss(self._depth(model, images, depth.shape[-2:]), depth, self.min_depth)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Depth ``[N, H, W]`` at the ground truth's size, clamped to ``[min_depth, max_depth]``.

        Example:
            >>> DepthTask(1e-3, 10.0).predict(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 4))).shape
            torch.Size([1, 4, 4])
        """
        images, depth = batch
        return self._depth(model, images, depth.shape[-2:]).float().clamp(self.min_depth, self.max_depth)

    def targets(self, batch: Any) -> torch.Tensor:
        """The ground truth as the metrics take it: with ``eval_crop="eigen"``, 0 outside the crop.

        Example:
            >>> DepthTask(1e-3, 10.0, "eigen").targets((None, torch.ones(1, 480, 640)))[0, 0, 0].item()
            0.0
        """
        depth = batch[1]
        if self.eval_crop == "eigen":
            depth = depth * eigen_crop_mask(*depth.shape[-2:]).to(depth.device)
        return depth

    def new_metrics(self, dataset: Any) -> Any:
        """Fresh :class:`DepthMetrics` over this task's depth range.

        Example:
            >>> DepthTask(1e-3, 10.0).new_metrics(None).max_depth
            10.0
        """
        from dysample_swap.finetune.metrics import DepthMetrics

        return DepthMetrics(min_depth=self.min_depth, max_depth=self.max_depth)

    def to_cpu(self, value: torch.Tensor) -> torch.Tensor:
        """Predictions or targets moved to the CPU.

        Example:
            >>> DepthTask(1e-3, 10.0).to_cpu(torch.zeros(1)).device.type
            'cpu'
        """
        return value.cpu()

    def image_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """Undo the ImageNet normalisation: ``uint8 [3, H, W]``.

        Example:
            >>> DepthTask(1e-3, 10.0).image_uint8(torch.zeros(3, 1, 1)).flatten().tolist()
            [124, 116, 104]
        """
        return normalized_to_uint8(image)

    def picture(self, image: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Depth in the ``turbo`` colour map over ``[0, max_depth]`` (near: blue, far: red), the same
        scale for truth and predictions; pixels without a measurement are black.

        Example:
            >>> p = DepthTask(1e-3, 10.0).picture(None, torch.tensor([[0.0, 10.0]]))
            >>> p.shape, p[:, 0, 0].tolist()
            (torch.Size([3, 1, 2]), [0, 0, 0])
        """
        depth = depth.detach().float().cpu()
        return _colour(depth / self.max_depth, "turbo", depth > 0)

    def error_picture(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The relative error ``|pred - gt| / gt`` in the ``inferno`` colour map over ``[0, 0.5]``
        (black: exact, yellow: 50 % off or more), where the ground truth has a measurement; grey elsewhere.

        Example:
            >>> p = DepthTask(1e-3, 10.0).error_picture(torch.tensor([[2.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
            >>> p[:, 0, 0].tolist(), p[:, 0, 1].tolist()
            ([0, 0, 4], [128, 128, 128])
        """
        pred, target = pred.detach().float().cpu(), target.detach().float().cpu()
        valid = target > 0
        error = (pred - target).abs() / torch.where(valid, target, 1.0)
        return _colour(error / 0.5, "inferno", valid, background=128)


def _colour(values: torch.Tensor, cmap: str, valid: torch.Tensor, background: int = 0) -> torch.Tensor:
    """``values`` in [0, 1] through a matplotlib colour map: ``uint8 [3, H, W]``."""
    lut = torch.from_numpy(matplotlib.colormaps[cmap](range(256))[:, :3] * 255.0).round().to(torch.uint8)
    index = (values.nan_to_num(0.0).clamp(0.0, 1.0) * 255.0).round().long()
    picture = lut[index].permute(2, 0, 1).contiguous()
    return torch.where(valid.unsqueeze(0), picture, torch.full_like(picture, background))
