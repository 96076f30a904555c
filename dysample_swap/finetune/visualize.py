"""See what DySample learned (the paper's Fig. 7): the sampling offsets of one DySample site.

:func:`visualize_offsets` runs a model (or a training checkpoint's model) on one image with a
forward hook on the chosen :class:`~dysample_swap.DySample`. The hook takes the module's input and
recomputes, with the module's own weights, through :mod:`dysample_swap.upsamplers.dysample.sampling`
(:func:`sampling_offsets`):

* where each output pixel samples the input (the sampler run on coordinate maps that the
  projections ignore), and where it would sample with zero offsets (the anchor); their
  difference is the offset ``0.25 * offset(x)`` (static scope) or
  ``0.5 * sigmoid(scope(x)) * offset(x)`` (dynamic scope), in input-feature pixels;
* for dynamic-scope variants (``dysample+``, ``dysample-s+``), the scope factor
  ``0.5 * sigmoid(scope(x))`` itself: the same sampler run with a zero offset weight and a unit
  offset bias, so the offset it produces *is* the scope factor.

The picture has one panel of arrows (anchor -> anchor + offset, magnified) over the image region
the upsampled feature covers, one of the offset length, and (dynamic scope) one of the scope.

Example:
    >>> import tempfile
    >>> from torch import nn
    >>> from dysample_swap import DySample
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DySample(8, groups=2, dyscope=True))
    >>> field = visualize_offsets(net, torch.randn(3, 16, 16), out=Path(tempfile.mkdtemp()) / "o.png")
    >>> field.site, tuple(field.displacement.shape), field.path.stat().st_size > 0
    ('1', (2, 2, 32, 32), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from dysample_swap.finetune.tasks import DepthTask, DetectionTask, PanopticTask, SegmentationTask, Task
from dysample_swap.finetune.tasks.common import ImageListBatches
from dysample_swap.upsamplers.dysample import sampling
from dysample_swap.upsamplers.dysample.module import DySample


@dataclass
class OffsetField:
    """What :func:`visualize_offsets` measured at one DySample site, for the first image.

    Positions are in pixels of the site's *input* feature (pixel centres at ``k + 0.5``).

    Attributes:
        site: the module path of the DySample.
        variant: its variant name (``dysample+``, ...).
        input_size, output_size: the feature size ``(H, W)`` before and after upsampling.
        anchor: ``[2, H_out, W_out]`` (x, y) where each output pixel samples with zero offsets.
        displacement: ``[groups, 2, H_out, W_out]`` (x, y) offset of every output pixel per group.
        scope: ``[groups, 2, H_out, W_out]`` dynamic scope factor, or ``None`` (static 0.25).
        image: ``uint8 [3, H, W]``, the picture the field is drawn over.
        path: the PNG written, if any.

    Example:
        >>> OffsetField("up", "dysample", (2, 2), (4, 4), torch.zeros(2, 4, 4),
        ...             torch.zeros(1, 2, 4, 4), None, torch.zeros(3, 8, 8, dtype=torch.uint8)).path is None
        True
    """

    site: str
    variant: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    anchor: Tensor
    displacement: Tensor
    scope: Tensor | None
    image: Tensor
    path: Path | None = None
    frame: tuple[float, float] = (1.0, 1.0)

    def magnitude(self, group: int | None = None) -> Tensor:
        """Offset length per output pixel, ``[H_out, W_out]``: of ``group``, or of the mean
        offset over groups.

        Example:
            >>> f = OffsetField("up", "dysample", (1, 1), (1, 1), torch.zeros(2, 1, 1),
            ...                 torch.tensor([[[[3.0]], [[4.0]]]]), None, torch.zeros(3, 1, 1))
            >>> f.magnitude().item()
            5.0
        """
        return self.vector(group).norm(dim=0)

    def vector(self, group: int | None = None) -> Tensor:
        """``[2, H_out, W_out]`` offsets of ``group``, or their mean over groups.

        Example:
            >>> f = OffsetField("up", "dysample", (1, 1), (1, 1), torch.zeros(2, 1, 1),
            ...                 torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[0.0]]]]), None,
            ...                 torch.zeros(3, 1, 1))
            >>> f.vector()[:, 0, 0].tolist(), f.vector(1)[:, 0, 0].tolist()
            ([2.0, 0.0], [3.0, 0.0])
        """
        return self.displacement.mean(0) if group is None else self.displacement[group]


def _with_coordinates(x: Tensor, groups: int, block: int) -> tuple[Tensor, list[int]]:
    """``x`` with two coordinate maps appended to every channel group: ``block`` channels holding
    each pixel's x centre (``w + 0.5``), then ``block`` holding its y centre. Returns the tensor
    and the positions, in units of ``block`` channels, of the original channels."""
    n, channels, height, width = x.shape
    per = channels // groups
    grid_x = (torch.arange(width, dtype=x.dtype, device=x.device) + 0.5).expand(n, block, height, width)
    grid_y = (torch.arange(height, dtype=x.dtype, device=x.device) + 0.5).view(-1, 1).expand(n, block, height, width)
    parts: list[Tensor] = []
    keep: list[int] = []
    for k in range(groups):
        parts += [x[:, k * per : (k + 1) * per], grid_x, grid_y]
        start = k * (per // block + 2)
        keep += range(start, start + per // block)
    return torch.cat(parts, dim=1), keep


def _padded(weight: Tensor, keep: list[int], columns: int) -> Tensor:
    """A 1x1 convolution weight that reads the original channels only (zeros elsewhere)."""
    wide = weight.new_zeros(weight.shape[0], columns, *weight.shape[2:])
    wide[:, keep] = weight
    return wide


@torch.no_grad()
def sampling_offsets(
    module: DySample, x: Tensor, size: Sequence[int] | None = None, scale_factor: float | Sequence[float] | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Anchor, offsets and dynamic scope of ``module`` on input ``x``, recomputed with the
    module's weights through :func:`dysample_swap.upsamplers.dysample.sampling.dysample`.

    The sampler is run on ``x`` with, in every channel group, two extra channels holding each
    pixel's x and y centre, which the offset (and scope) projections read with zero weight: the
    offsets are exactly the module's, and bilinear sampling of a coordinate map returns the
    position it samples at. So the result is what the sampler reads, whatever its
    implementation; positions beyond the outer pixel centres read as clamped to them (the
    sampler's border rule): ``displacement`` is where a pixel reads minus where it reads with zero
    offsets. The scope is read from a unit raw offset, moved forward or backward as the border
    allows; it is NaN where the zero-offset reading is already clamped (bilinear anchors beyond
    the outer pixel centres: the first and last output row and column of a x2 upsampling).

    Returns ``anchor [N, 2, H_out, W_out]`` (zero-offset sampling positions, identical for every
    group), ``displacement [N, groups, 2, H_out, W_out]`` and ``scope`` of the same shape (the
    factor ``0.5 * sigmoid(scope(x))``) or ``None`` for a static scope; x before y, in input pixels.

    Example:
        >>> up = DySample(4, scale=2, groups=1, offset_init_std=0.0)
        >>> with torch.no_grad():
        ...     _ = up.offset.bias.fill_(2.0)                 # raw offset 2 -> 0.25 * 2
        >>> anchor, disp, scope = sampling_offsets(up, torch.randn(1, 4, 3, 3))
        >>> anchor[0, :, 1, 1:4].tolist(), disp[..., 1:-2, 1:-2].unique().tolist(), scope
        ([[0.75, 1.25, 1.75], [0.75, 0.75, 0.75]], [0.5], None)
    """
    n, channels, height, width = x.shape
    s, g = module.scale, module.groups
    block = s * s if module.style == "pl" else 1
    wide, keep = _with_coordinates(x.double(), g, block)
    columns = wide.shape[1] // block
    per = channels // g

    def positions(offset_weight: Tensor, offset_bias: Tensor | None) -> Tensor:
        scope = module.scope.weight if module.dyscope else None
        out = sampling.dysample(
            wide,
            _padded(offset_weight.double(), keep, columns),
            None if offset_bias is None else offset_bias.double(),
            None if scope is None else _padded(scope.double(), keep, columns),
            scale=s,
            style=module.style,
            groups=g,
            size=size,
            scale_factor=scale_factor,
            anchor=module.anchor,
            positions=module.positions,
            init_pos=cast(Tensor, module.init_pos),
        )
        out = out.unflatten(1, (g, per + 2 * block))  # [N, g, per + 2b, Ho, Wo]
        return torch.stack([out[:, :, per], out[:, :, per + block]], dim=2)  # [N, g, 2, Ho, Wo]

    weight, bias = module.offset.weight, module.offset.bias
    zero = positions(torch.zeros_like(weight), None if bias is None else torch.zeros_like(bias))
    displacement = (positions(weight, bias) - zero).float()
    scope = None
    if module.dyscope:
        unit = torch.ones(module.offset.out_channels, dtype=weight.dtype, device=weight.device)
        flat = torch.zeros_like(weight)
        # A unit raw offset moves a reading by the scope factor in whichever direction the border
        # leaves room for (one always does: the pixel centres span >= 1 px, the factor <= 0.5).
        # Where a tiny step moves the zero-offset reading neither way it is clamped already.
        forward = positions(flat, unit) - zero
        backward = zero - positions(flat, -unit)
        free = ((positions(flat, 1e-3 * unit) - zero) > 0) | ((zero - positions(flat, -1e-3 * unit)) > 0)
        scope = torch.where(free, torch.maximum(forward, backward), torch.full_like(forward, float("nan"))).float()
    return zero[:, 0].float(), displacement, scope


def dysample_sites(model: nn.Module) -> list[str]:
    """Module paths of the DySample modules in ``model`` (``named_modules`` order).

    Example:
        >>> dysample_sites(nn.Sequential(nn.Conv2d(8, 8, 1), DySample(8)))
        ['1']
    """
    return [name for name, module in model.named_modules() if isinstance(module, DySample)]


def _task_for(task: str, num_classes: int, score_threshold: float = 0.5, num_stuff: int = 1) -> Task:
    """A task adapter for pictures and inputs only, from what a checkpoint's signature records."""
    names = [f"class{k}" for k in range(num_classes)]
    if task == "segmentation":
        return SegmentationTask(num_classes, 255, names)
    if task == "depth":
        return DepthTask(1e-3, 10.0)
    if task == "panoptic":
        return PanopticTask(range(1, num_classes), range(num_classes, num_classes + num_stuff), {})
    return DetectionTask(num_classes, names, with_masks=task == "instance", score_threshold=score_threshold)


def _takes_image_lists(task: Any) -> bool:
    """Whether the task's model takes a list of ``[0, 1]`` images (torchvision detectors, Panoptic FPN)."""
    return isinstance(task, ImageListBatches)


def load_image_input(path: str | Path, task: Task, image_size: int | Sequence[int] | None = None) -> Tensor:
    """An image file as the model input ``[3, H, W]`` of ``task``: ImageNet-normalised for
    segmentation (resized to ``image_size`` if given), ``[0, 1]`` for detection.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.png"; Image.new("RGB", (8, 6)).save(p)
        >>> load_image_input(p, _task_for("segmentation", 2), 4).shape
        torch.Size([3, 4, 4])
    """
    from dysample_swap.finetune.data.common import image_to_unit_tensor, load_image, normalize_image, parse_image_size

    image = load_image(Path(path))
    if _takes_image_lists(task):
        return image_to_unit_tensor(image)
    if image_size is not None:
        height, width = parse_image_size(image_size)
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return normalize_image(image)


def load_checkpoint_model(
    checkpoint: str | Path, image: Tensor | None = None, *, trust_spec: bool = False
) -> tuple[nn.Module, Task, Any]:
    """Rebuild the model of a training checkpoint (the engine's ``last.pt``) from the recipe it
    records, without its dataset; returns ``(model in eval mode, task, config)``.

    The swap is replayed on ``image`` (a model input ``[3, H, W]``; default: zeros at the recipe's
    ``data.image_size``), which gives the structure of training whenever the model's upsampling
    sites do not depend on the input size (as for every supported model at the training size).

    The model spec comes from the checkpoint, a file anyone who could write it may have edited:
    ``smp:``, ``torchvision:`` and ``timm:`` specs are built, a ``package.module:function`` spec
    (which imports and runs that code) only with ``trust_spec=True``; otherwise
    :class:`~dysample_swap.surgery.model_spec.UntrustedSpecError` names the spec and the way out.

    Example:
        >>> # model, task, cfg = load_checkpoint_model("runs/demo/dysample+/seed0/checkpoints/last.pt")
    """
    from dysample_swap.finetune.builders import build_base_model, swap_model
    from dysample_swap.finetune.checkpoint import CheckpointError, load_checkpoint, load_model_state
    from dysample_swap.finetune.config import build_config
    from dysample_swap.finetune.data.common import parse_image_size
    from dysample_swap.surgery.model_spec import UntrustedSpecError

    state = load_checkpoint(checkpoint)
    raw, found = state.get("config"), state.get("signature", {})
    if not isinstance(raw, Mapping) or not isinstance(found, Mapping):
        raise CheckpointError(
            f"{checkpoint}: its config or model signature is missing or not a mapping, so the model it holds "
            "cannot be rebuilt; visualize a checkpoint that dysample-swap finetune or compare wrote"
        )
    cfg = build_config(raw)
    num_classes = int(found.get("num_classes", 0))
    num_stuff = int(found.get("num_stuff", 0))
    task = _task_for(cfg.task, num_classes, cfg.eval.score_threshold, num_stuff)
    try:
        model = build_base_model(cfg, num_classes, num_stuff=num_stuff, trust_spec=trust_spec)
    except UntrustedSpecError as err:
        raise UntrustedSpecError(
            f"{checkpoint}: its config's model spec {cfg.model.spec!r} imports and runs a Python "
            "function, and a checkpoint's config is not trusted: if you trust where this checkpoint "
            "came from, pass --trust-spec (Python: trust_spec=True); otherwise build the model "
            "yourself, load the checkpoint's weights and pass the model"
        ) from err
    if found.get("swapped"):
        if image is None:
            height, width = parse_image_size(cfg.data.get("image_size", 64))
            image = torch.zeros(3, height, width)
        model, _ = swap_model(cfg, model, found["variant"], task.example_inputs([(image, None)]), verbose=False)
    load_model_state(model, state["model"], checkpoint)
    return model.eval(), task, cfg


def _choose(model: nn.Module, site: str | int | None) -> list[str]:
    sites = dysample_sites(model)
    if not sites:
        raise ValueError(
            "the model has no DySample module to visualise (an 'original' arm, or a "
            "rival upsampler); pass a DySample-swapped model or its checkpoint"
        )
    if site is None:
        return sites
    if isinstance(site, int):
        if not -len(sites) <= site < len(sites):
            raise ValueError(
                f"site index {site} out of range: the model has {len(sites)} DySample "
                f"sites: {', '.join(f'{k}: {s}' for k, s in enumerate(sites))}"
            )
        return [sites[site]]
    if site not in sites:
        raise ValueError(
            f"no DySample site {site!r}; the model's DySample sites are "
            f"{', '.join(f'{k}: {s}' for k, s in enumerate(sites))}"
        )
    return [site]


def visualize_offsets(
    model_or_checkpoint: nn.Module | str | Path,
    image: str | Path | Tensor,
    site: str | int | None = None,
    out: str | Path | None = "offsets.png",
    *,
    group: int | None = None,
    arrows: int = 24,
    task: Task | None = None,
    title: str | None = None,
    trust_spec: bool = False,
) -> OffsetField:
    """Run a model on ``image`` and draw the sampling offsets of one DySample site.

    Args:
        model_or_checkpoint: a model holding DySample modules, or the path of a training
            checkpoint (``RUN/checkpoints/last.pt`` of ``finetune`` or ``compare``), whose recipe
            gives the model and the input preprocessing.
        image: an image file, or a model input tensor ``[3, H, W]`` (as a dataset yields it).
        site: module path or index in :func:`dysample_sites`; default: the site with the largest
            output (the finest upsampling, where offsets are easiest to see).
        out: PNG to write (``None``: measure only).
        group: draw this channel group's offsets; default: their mean over groups.
        arrows: at most this many arrows along each side.
        task: the task adapter (input layout, picture); default from the checkpoint, or
            segmentation (ImageNet-normalised input, one image batch) for a model.
        title: a line added to the figure title.
        trust_spec: for a checkpoint, build its config's model spec even if it is a
            ``package.module:function`` spec (:func:`load_checkpoint_model`); only for a checkpoint
            whose origin you trust.

    Returns:
        the :class:`OffsetField` of the chosen site.

    Example:
        >>> from dysample_swap import DySample
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), DySample(8, groups=2), DySample(8, groups=2))
        >>> visualize_offsets(net, torch.randn(3, 8, 8), out=None).site   # the finest of the two
        '2'
    """
    cfg = None
    if isinstance(model_or_checkpoint, nn.Module):
        model, task = model_or_checkpoint, task or _task_for("segmentation", 1)
        inputs = image if isinstance(image, Tensor) else load_image_input(image, task)
    else:
        path = Path(model_or_checkpoint)
        given = image if isinstance(image, Tensor) else None
        model, task, cfg = load_checkpoint_model(path, given, trust_spec=trust_spec)
        inputs = (
            given
            if given is not None
            else load_image_input(cast("str | Path", image), task, cfg.data.get("image_size"))
        )
    candidates = _choose(model, site)
    calls: dict[str, tuple[DySample, Tensor, Any, Any, int]] = {}

    def hook(name: str) -> Callable:
        def capture(module: DySample, args: tuple, kwargs: dict, output: Tensor) -> None:
            size = kwargs.get("size", args[1] if len(args) > 1 else None)
            scale_factor = kwargs.get("scale_factor", args[2] if len(args) > 2 else None)
            if size is None and scale_factor is None:  # the module's defaults, as forward() does
                size, scale_factor = module.size, module.scale_factor
            area = output.shape[-2] * output.shape[-1]
            calls.setdefault(name, (module, args[0][:1].detach(), size, scale_factor, area))

        return capture

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook(name), with_kwargs=True) for name in candidates]
    frame: dict[str, tuple[int, int, float, float]] = {}
    transform = getattr(model, "transform", None)
    if _takes_image_lists(task) and isinstance(transform, nn.Module):

        def resized(module: nn.Module, args: tuple, output: Any) -> None:
            batch = output[0]
            (h, w), (ph, pw) = batch.image_sizes[0], batch.tensors.shape[-2:]
            frame["net"] = (ph, pw, h / inputs.shape[-2], w / inputs.shape[-1])

        handles.append(transform.register_forward_hook(resized))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x = inputs.to(device)
            model([x]) if _takes_image_lists(task) else model(x[None])
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    ran = [name for name in candidates if name in calls]
    if not ran:
        raise ValueError(f"DySample site(s) {', '.join(candidates)} did not run on this input")
    chosen = max(ran, key=lambda name: calls[name][4])
    module, x, size, scale_factor, _ = calls[chosen]
    anchor, displacement, scope = sampling_offsets(module, x, size, scale_factor)
    picture = task.image_uint8(inputs)
    net_h, net_w, ratio_h, ratio_w = frame.get("net", (inputs.shape[-2], inputs.shape[-1], 1.0, 1.0))
    field = OffsetField(
        site=chosen,
        variant=module.variant,
        input_size=(x.shape[-2], x.shape[-1]),
        output_size=(displacement.shape[-2], displacement.shape[-1]),
        anchor=anchor[0].cpu(),
        displacement=displacement[0].cpu(),
        scope=None if scope is None else scope[0].cpu(),
        image=picture,
        frame=(net_w / x.shape[-1] / ratio_w, net_h / x.shape[-2] / ratio_h),
    )
    if group is not None and not 0 <= group < module.groups:
        raise ValueError(f"group {group} out of range: site {chosen} has {module.groups} groups")
    if out is not None:
        field.path = draw_offsets(
            field, out, group=group, arrows=arrows, title=title, channels=module.in_channels, scale=module.scale
        )
    return field


def draw_offsets(
    field: OffsetField,
    out: str | Path,
    *,
    group: int | None = None,
    arrows: int = 24,
    title: str | None = None,
    channels: int | None = None,
    scale: int | None = None,
) -> Path:
    """The PNG of an :class:`OffsetField`: arrows over the image, offset length, dynamic scope.

    Example:
        >>> import tempfile
        >>> f = OffsetField("up", "dysample", (2, 2), (4, 4), torch.rand(2, 4, 4) * 2,
        ...                 torch.rand(1, 2, 4, 4) - 0.5, None, torch.zeros(3, 8, 8, dtype=torch.uint8),
        ...                 frame=(4.0, 4.0))
        >>> draw_offsets(f, Path(tempfile.mkdtemp()) / "f.png").suffix
        '.png'
    """
    out = Path(out)
    sx, sy = field.frame  # input-feature pixels -> image pixels
    img = field.image.permute(1, 2, 0).numpy()
    height, width = img.shape[:2]
    vec = field.vector(group).numpy()
    magnitude = np.hypot(vec[0], vec[1])
    out_h, out_w = field.output_size
    step = max(1, math.ceil(max(out_h, out_w) / arrows))
    rows, cols = np.arange(step // 2, out_h, step), np.arange(step // 2, out_w, step)
    ax_, ay_ = field.anchor[0].numpy() * sx, field.anchor[1].numpy() * sy
    px, py = ax_[np.ix_(rows, cols)], ay_[np.ix_(rows, cols)]
    dx, dy = vec[0][np.ix_(rows, cols)] * sx, vec[1][np.ix_(rows, cols)] * sy
    spacing = step * min(sx * field.input_size[1] / out_w, sy * field.input_size[0] / out_h)
    extent = (0, sx * field.input_size[1], sy * field.input_size[0], 0)  # the region it covers
    longest = float(np.percentile(np.hypot(dx, dy), 98)) if dx.size else 0.0
    gain = 0.9 * spacing / longest if longest > 0 else 1.0
    gray = img.mean(axis=2)

    panels = 3 if field.scope is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 5.0), squeeze=False)
    picture = (0, width, height, 0)
    ax = axes[0][0]
    ax.imshow(img, interpolation="nearest", extent=picture)
    shown = ax.quiver(
        px,
        py,
        dx * gain,
        dy * gain,
        magnitude[np.ix_(rows, cols)],
        cmap="autumn",
        angles="xy",
        scale_units="xy",
        scale=1.0,
        width=0.006,
        headwidth=3.5,
        headlength=4.0,
        edgecolor="black",
        linewidth=0.3,
    )
    ax.scatter(px.ravel(), py.ravel(), s=3, c="white", edgecolors="black", linewidths=0.2)
    cbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label("offset length (input-feature pixels)", fontsize=8)
    ax.set_title(f"sampling offsets, arrows magnified x{gain:.3g}\n(dot: zero-offset position)", fontsize=9)

    ax = axes[0][1]
    ax.imshow(gray, cmap="gray", interpolation="nearest", extent=picture)
    shown = ax.imshow(magnitude, cmap="magma", alpha=0.75, extent=extent, interpolation="nearest")
    cbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label("input-feature pixels", fontsize=8)
    ax.set_title(f"offset length\n(mean {magnitude.mean():.3g}, max {magnitude.max():.3g})", fontsize=9)

    if field.scope is not None:
        scope = (field.scope.mean(0) if group is None else field.scope[group]).mean(0).numpy()
        ax = axes[0][2]
        ax.imshow(gray, cmap="gray", interpolation="nearest", extent=picture)
        shown = ax.imshow(scope, cmap="viridis", vmin=0.0, vmax=0.5, alpha=0.8, extent=extent, interpolation="nearest")
        cbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        cbar.ax.axhline(0.25, color="white", linewidth=1.5)
        cbar.set_label("0.5 * sigmoid(scope(x)); line: static 0.25", fontsize=8)
        ax.set_title(f"dynamic scope factor\n(range {np.nanmin(scope):.4g} to {np.nanmax(scope):.4g})", fontsize=9)
    for ax in axes[0]:
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    which = "mean over groups" if group is None else f"group {group}"
    what = [
        f"{field.site}: {field.variant}",
        f"x{scale}" if scale else None,
        f"{channels} channels" if channels else None,
        f"{field.input_size[0]}x{field.input_size[1]} -> {out_h}x{out_w}",
        which,
        None if field.scope is not None else "static scope 0.25",
    ]
    heading = ", ".join(w for w in what if w)
    fig.suptitle(heading if title is None else f"{title}\n{heading}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
