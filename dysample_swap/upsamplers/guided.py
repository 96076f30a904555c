"""The shared frame of the guided upsamplers: input checks, the guide at the native size, any output size.

A guided upsampler (FADE, SAPA, A2U, IndexNet, FreqFusion) reads a low-resolution feature ``x``
``(B, C, h, w)`` and a high-resolution **guide** ``(B, C_guide, H, W)``, e.g. the encoder feature of the
skip connection, and computes at an integer ``scale``. :class:`GuidedUpsampler` gives them one
``forward(x, guide, size=None, scale_factor=None)`` (as :class:`~dysample_swap.upsamplers.base.NativeScaleUpsampler`
does for the unguided rivals):

1. :func:`check_pair` refuses inputs the module cannot read (not 4-D, other channels than the module's,
   an empty plane, batch sizes that differ), naming the fix and the argument order (``x`` first; the
   authors' modules take the guide first);
2. the requested output (``size`` / ``scale_factor``, else the module's defaults, else ``scale`` times
   the input) is checked before any work (:func:`dysample_swap.upsamplers.sizing.requested_hw`);
3. :func:`native_guide`: a guide of another size is resized to the native size ``(scale*h, scale*w)``
   with ``F.interpolate(mode="bilinear", align_corners=False)`` (only when it differs);
4. the subclass computes the native output in :meth:`GuidedUpsampler.native`, and
   :func:`dysample_swap.upsamplers.sizing.fit_native` fits it to the request (every output pixel is the
   native pixel it falls on, as for :class:`~dysample_swap.upsamplers.carafe.CARAFEPack`).

A subclass keeps its authors' constructor and attribute names; it names them in three class
attributes: :attr:`~GuidedUpsampler.x_channels_arg` (``None``: ``x`` may have any channels),
:attr:`~GuidedUpsampler.guide_channels_arg` and :attr:`~GuidedUpsampler.default_factor_arg` (the
attribute holding the default ``scale_factor``; ``"output_scale_factor"`` where the authors' constructor
already uses ``scale_factor`` for the ratio).

Example:
    >>> import torch
    >>> class Repeat(GuidedUpsampler):
    ...     guide_channels_arg = "inp"
    ...     def __init__(self, inp):
    ...         super().__init__()
    ...         self.inp, self.size, self.scale_factor = inp, None, None
    ...     @property
    ...     def scale(self): return 2
    ...     def native(self, x, guide): return x.repeat_interleave(2, 2).repeat_interleave(2, 3) * guide.mean(1, True)
    >>> up = Repeat(3)
    >>> up(torch.randn(1, 8, 13, 13), torch.randn(1, 3, 25, 25), size=(25, 25)).shape
    torch.Size([1, 8, 25, 25])
    >>> up(torch.randn(1, 8, 13, 13), torch.randn(1, 4, 26, 26))
    Traceback (most recent call last):
    ...
    ValueError: Repeat: guide has 4 channels but the module was built with inp=3; pass a guide with 3 channels or build the module with inp=4 (Repeat.forward takes the low-resolution feature x first, then the high-resolution guide)
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dysample_swap.upsamplers.sizing import Factor, Size, fit_native, requested_hw


def check_pair(
    x: Tensor,
    guide: Tensor,
    who: str,
    x_channels: tuple[str, int] | None,
    guide_channels: tuple[str, int] | None,
    *,
    names: tuple[str, str] = ("x", "guide"),
    order: str | None = None,
) -> None:
    """Refuse a low-resolution ``x`` and a high-resolution ``guide`` that ``who`` cannot read, naming the fix.

    Args:
        x, guide: the two inputs, ``(B, C, h, w)`` and ``(B, C_guide, H, W)``.
        who: the module's name, for the messages.
        x_channels, guide_channels: ``(constructor argument, expected channels)``; ``None``: any channels.
        names: what the messages call ``x`` and ``guide`` (e.g. the authors' ``("lr_feat", "hr_feat")``).
        order: the argument order, added to the messages; default ``"<who>.forward takes the
            low-resolution feature x first, then the high-resolution guide"``.

    Raises:
        ValueError: for an input that is not 4-D, has other channels than expected or an empty plane,
            and for batch sizes that differ.

    Example:
        >>> import torch
        >>> check_pair(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 8, 8), "FADE", ("in_channels_de", 8), ("in_channels_en", 16))
        >>> check_pair(torch.randn(2, 8, 4, 4), torch.randn(1, 16, 8, 8), "FADE", None, None)
        Traceback (most recent call last):
        ...
        ValueError: FADE: the guide has batch size 1 but x has 2; pass one guide per sample of x
    """
    x_name, guide_name = names
    if order is None:
        order = f"{who}.forward takes the low-resolution feature {x_name} first, then the high-resolution {guide_name}"
    inputs = ((x_name, x, x_channels, "low"), (guide_name, guide, guide_channels, "high"))
    for name, t, _, resolution in inputs:
        if t.dim() != 4:
            raise ValueError(
                f"{who}: {name} must be the {resolution}-resolution feature, a 4-D (B, C, H, W) tensor, got shape "
                f"{tuple(t.shape)}; add the batch dimension ({name}[None]) or pass a 4-D feature map ({order})"
            )
    for name, t, expected, _ in inputs:
        if expected is not None and t.shape[1] != expected[1]:
            arg, channels = expected
            raise ValueError(
                f"{who}: {name} has {t.shape[1]} channels but the module was built with {arg}={channels}; pass a "
                f"{name} with {channels} channels or build the module with {arg}={t.shape[1]} ({order})"
            )
    for name, t, _, _ in inputs:
        if min(t.shape[-2:]) < 1:
            raise ValueError(f"{who}: {name} has an empty plane {tuple(t.shape)}; pass a feature map of at least 1x1")
    if guide.shape[0] != x.shape[0]:
        raise ValueError(
            f"{who}: the {guide_name} has batch size {guide.shape[0]} but {x_name} has {x.shape[0]}; pass one "
            f"{guide_name} per sample of {x_name}"
        )


def native_guide(guide: Tensor, native: tuple[int, int]) -> Tensor:
    """The guide at the ``native`` size: itself when it has that size, else its bilinear resize (``align_corners=False``).

    Example:
        >>> import torch
        >>> g = torch.randn(1, 3, 26, 26)
        >>> native_guide(g, (26, 26)) is g, native_guide(g, (26, 24)).shape
        (True, torch.Size([1, 3, 26, 24]))
    """
    if tuple(guide.shape[-2:]) == native:
        return guide
    return F.interpolate(guide, size=native, mode="bilinear", align_corners=False)


class GuidedUpsampler(nn.Module):
    """Base of the guided upsamplers: ``forward(x, guide, size=None, scale_factor=None)`` (see the module docstring).

    A subclass sets the three class attributes, stores ``size`` and the default factor, and defines
    :attr:`scale` and :meth:`native`.
    """

    x_channels_arg: ClassVar[str | None] = None
    """The attribute (and constructor argument) holding ``x``'s channels; ``None``: ``x`` may have any."""
    guide_channels_arg: ClassVar[str]
    """The attribute (and constructor argument) holding the guide's channels."""
    default_factor_arg: ClassVar[str] = "scale_factor"
    """The attribute holding the default ``scale_factor`` of ``forward`` (``size`` is always ``size``)."""

    size: Size | None

    @property
    def scale(self) -> int:
        """The integer ratio of the native output."""
        raise NotImplementedError

    @property
    def guide_channels(self) -> int:
        """The channels the guide must have.

        Example:
            >>> from dysample_swap.upsamplers.sapa import SAPA
            >>> SAPA(64, 32).guide_channels
            64
        """
        return int(getattr(self, self.guide_channels_arg))

    def default_request(self) -> tuple[Size | None, Factor | None]:
        """The module's default output, ``(size, scale_factor)`` (``(None, None)``: ``scale`` times the input).

        Example:
            >>> from dysample_swap.upsamplers.fade import FADE
            >>> FADE(8, output_scale_factor=1.5).default_request()
            (None, 1.5)
        """
        return self.size, getattr(self, self.default_factor_arg)

    def check_inputs(self, x: Tensor, guide: Tensor) -> None:
        """:func:`check_pair` with this module's channels (see :meth:`forward`)."""
        x_arg = self.x_channels_arg
        x_channels = None if x_arg is None else (x_arg, int(getattr(self, x_arg)))
        check_pair(x, guide, type(self).__name__, x_channels, (self.guide_channels_arg, self.guide_channels))

    traced_sizes_fixed: ClassVar[bool] = False
    """Whether a traced graph of the module holds the example's sizes (a warning says so when it is traced)."""

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """The output at ``scale`` times ``x`` from a guide already at that (native) size."""
        raise NotImplementedError

    def forward(self, x: Tensor, guide: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Upsample ``x`` guided by ``guide`` to ``size`` / by ``scale_factor``, else the defaults, else x ``scale``.

        Args:
            x: the low-resolution feature, ``(B, C, h, w)``.
            guide: the high-resolution guide, ``(B, C_guide, H, W)``; resized (bilinear) to
                ``(scale*h, scale*w)`` when it has another size.
            size, scale_factor: the output size, as ``F.interpolate``'s.

        Raises:
            ValueError: for inputs that are not 4-D, with other channels than the module's, an empty plane
                or a guide whose batch size differs from ``x``'s; for a bad ``size`` / ``scale_factor``.
        """
        self.check_inputs(x, guide)
        if self.traced_sizes_fixed and torch.jit.is_tracing():
            warnings.warn(
                f"{type(self).__name__}: a traced graph (torch.jit.trace, torch.onnx.export(dynamo=False)) keeps "
                f"the example's height and width ({tuple(x.shape[-2:])}) in its reassembly: run the exported model "
                "at that input size only (other sizes give wrong numbers), or export with "
                "torch.onnx.export(..., dynamo=True), which keeps the sizes dynamic",
                stacklevel=2,
            )
        if size is None and scale_factor is None:
            size, scale_factor = self.default_request()
        height, width = x.shape[-2:]
        requested_hw(height, width, self.scale, size, scale_factor)  # refuse a bad request before any work
        guide = native_guide(guide, (self.scale * height, self.scale * width))
        return fit_native(self.native(x, guide), self.scale, size, scale_factor)
