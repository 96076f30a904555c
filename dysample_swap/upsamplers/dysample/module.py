"""DySample, the point-sampling upsampler of "Learning to Upsample by Learning to Sample" (ICCV 2023).

A thin ``nn.Module`` over :func:`dysample_swap.upsamplers.dysample.sampling.dysample`. The first five
constructor arguments, the state-dict names (``offset.weight``, ``offset.bias``,
``scope.weight``, ``init_pos``) and the formulas match the authors' module, so their
checkpoints load with ``strict=True`` and give the same results: bit for bit at the native size
(the default ``positions="grid"`` is their ``grid_sample`` arithmetic there; ``"authors"`` allows
nothing else). ``positions="exact"`` carries positions as index plus fraction instead, without the
float32 rounding of normalised coordinates (``~W * 2**-24`` pixels), so zero offsets reproduce
``F.interpolate`` bit for bit at every size (as fast as ``"grid"`` with the compiled CPU sampler,
2-3x slower without it). On top of it:

* ``forward(x, size=...)`` / ``forward(x, scale_factor=...)`` for any output size,
* a choice of ``anchor`` (where zero offsets sample) so a swapped network starts out
  computing exactly what it computed before,
* ``groups_fallback`` for channel counts that the groups do not divide,
* a choice of ``sampler``: the compiled CPU kernel, the Triton kernel for GPUs (``"triton"``),
  or the pure-PyTorch ones,
* float32 sampling coordinates under autocast, channels_last inputs, and export
  through fx, ``torch.export``, ONNX (dynamic height/width) and ``torch.compile``.

Example:
    >>> import torch
    >>> up = DySample.from_variant("dysample+", in_channels=64, scale=2)
    >>> up(torch.randn(1, 64, 13, 13), size=(25, 25)).shape
    torch.Size([1, 64, 25, 25])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.fx
from torch import Tensor, nn

from dysample_swap import _torch_compat
from dysample_swap.upsamplers.dysample import native
from dysample_swap.upsamplers.dysample.sampling import POSITIONS, SAMPLERS, check_anchor, dysample
from dysample_swap.upsamplers.dysample.variants import variant_name, variant_settings

# The sampler shows up as one leaf call in fx graphs: its shape arithmetic runs at run time.
torch.fx.wrap("dysample")

STYLES: tuple[str, ...] = ("lp", "pl")
"""Offset generation styles: ``"lp"`` linear then pixel shuffle, ``"pl"`` pixel shuffle then linear."""


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, min(value, limit) + 1) if value % d == 0)


def resolve_groups(in_channels: int, scale: int, style: str, groups: int) -> int:
    """The group count ``groups_fallback=True`` uses: the largest valid one not above ``groups``.

    LP needs ``in_channels % groups == 0``; PL needs ``in_channels % scale**2 == 0`` (for
    ``pixel_shuffle``) and ``(in_channels // scale**2) % groups == 0``.

    Raises:
        ValueError: when no group count can work (PL with ``in_channels % scale**2 != 0``).

    Example:
        >>> resolve_groups(30, scale=2, style="lp", groups=4)
        3
        >>> resolve_groups(36, scale=2, style="pl", groups=8)
        3
    """
    if style == "pl":
        if in_channels % (scale * scale):
            raise ValueError(
                f"DySample style 'pl' pixel-shuffles the input, so in_channels must be divisible by "
                f"scale**2 = {scale * scale}; got in_channels={in_channels}. Use style='lp' "
                f"(variant 'dysample' or 'dysample+') for this layer."
            )
        return _largest_divisor_at_most(in_channels // (scale * scale), groups)
    return _largest_divisor_at_most(in_channels, groups)


def _check_groups(in_channels: int, scale: int, style: str, groups: int) -> None:
    fixed = resolve_groups(in_channels, scale, style, groups)  # raises when no group count can work
    if fixed != groups:  # the largest valid divisor not above `groups` is `groups` itself iff it divides
        divided = in_channels // (scale * scale) if style == "pl" else in_channels
        what = f"in_channels // scale**2 = {divided}" if style == "pl" else f"in_channels = {in_channels}"
        raise ValueError(
            f"DySample(in_channels={in_channels}, style={style!r}, groups={groups}): {what} is not divisible "
            f"by groups={groups}. Use groups={fixed} (the largest divisor not above {groups}), or pass "
            f"groups_fallback=True to pick it automatically."
        )


class DySample(nn.Module):
    """Dynamic point-sampling upsampler (DySample, DySample+, DySample-S, DySample-S+).

    Args:
        in_channels: channels of the input (and output).
        scale: integer sub-pixel factor ``>= 2``: offsets are generated for ``scale x scale``
            output pixels per input pixel; the default output size is ``scale`` times the input.
        style: ``"lp"`` (linear, then pixel shuffle) or ``"pl"`` (pixel shuffle, then linear).
        groups: channel groups; each group has its own sampling set.
        dyscope: dynamic scope factor ``0.5 * sigmoid(scope(x))`` instead of the static 0.25.
        anchor: where zero offsets sample, one of ``"bilinear"`` (the paper's bilinear
            initialisation, ``align_corners=False``), ``"bilinear_align_corners"`` or ``"nearest"``.
        offset_init_std: std of the normal init of ``offset.weight`` (the paper: 0.001). ``0.0``
            gives zero offsets, so the module starts out equal to ``F.interpolate`` in ``anchor`` mode.
        groups_fallback: instead of raising for a channel count that ``groups`` does not divide,
            use :func:`resolve_groups` (the largest valid divisor not above ``groups``).
        positions: ``"grid"`` (default, fast): ``grid_sample`` at the anchor plus the offsets, the
            authors' arithmetic at the native size; float32 positions are good to ``W * 2**-24`` px,
            so zero offsets equal ``F.interpolate`` bit for bit at power-of-two sizes and to ~1e-6
            elsewhere. ``"exact"``: positions as input index plus fraction, so zero offsets reproduce
            ``F.interpolate`` at every size (``nearest``: bit for bit), for models with an argmax,
            NMS or top-k after the upsampler (2-3x slower on the CPU without the compiled sampler).
            ``"authors"``: the authors'
            module only (native size, bilinear anchor).
        size, scale_factor: the output size or factor used when ``forward`` gets neither, as
            ``nn.Upsample(size=...)`` / ``nn.Upsample(scale_factor=...)`` would (at most one of
            them; default: ``scale`` times the input). This makes a DySample a drop-in for an
            ``nn.Upsample`` layer that a framework calls as ``layer(x)``.
        sampler: which implementation reads the features, one of
            :data:`~dysample_swap.upsamplers.dysample.sampling.SAMPLERS`: ``"auto"`` (the compiled
            kernel on the CPU, the Triton one on GPUs for ``positions="exact"``, see the sampling module),
            ``"native"``, ``"triton"`` (GPUs; deterministic input gradients under
            ``torch.use_deterministic_algorithms(True)``),
            ``"sparse"``, ``"gather"`` or ``"reference"``. All compute the same read.

    Shapes:
        ``x``: ``(N, C, H, W)`` -> ``(N, C, H_out, W_out)``.

    Example:
        >>> import torch
        >>> up = DySample(256, scale=2, style="lp", groups=4, dyscope=True)
        >>> up(torch.randn(2, 256, 8, 8)).shape
        torch.Size([2, 256, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        scale: int = 2,
        style: str = "lp",
        groups: int = 4,
        dyscope: bool = False,
        *,
        anchor: str = "bilinear",
        offset_init_std: float = 0.001,
        groups_fallback: bool = False,
        positions: str = "grid",
        size: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
        sampler: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
            raise ValueError(f"DySample scale must be an integer >= 2, got {scale!r}")
        if style not in STYLES:
            raise ValueError(f"DySample style must be 'lp' or 'pl', got {style!r}")
        if size is not None and scale_factor is not None:
            raise ValueError("DySample takes a default size or a default scale_factor, not both")
        if in_channels < 1 or groups < 1:
            raise ValueError(f"DySample needs in_channels >= 1 and groups >= 1, got {in_channels} and {groups}")
        if groups_fallback:
            groups = resolve_groups(in_channels, scale, style, groups)
        else:
            _check_groups(in_channels, scale, style, groups)
        self.in_channels = in_channels
        self.scale = scale
        self.style = style
        self.groups = groups
        self.dyscope = dyscope
        self.anchor = check_anchor(anchor)
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions {positions!r}; choose one of {', '.join(POSITIONS)}")
        self.positions = positions
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.offset_init_std = offset_init_std
        self.size = size
        self.scale_factor = scale_factor

        conv_in = in_channels // (scale * scale) if style == "pl" else in_channels
        conv_out = 2 * groups if style == "pl" else 2 * groups * scale * scale
        self.offset = nn.Conv2d(conv_in, conv_out, 1)
        if dyscope:
            self.scope = nn.Conv2d(conv_in, conv_out, 1, bias=False)
        self.register_buffer("init_pos", self._bilinear_init_pos())
        self.reset_parameters()
        native.library()  # build/load the compiled CPU sampler now, outside any torch.compile region

    @classmethod
    def from_variant(cls, variant: str, in_channels: int, scale: int = 2, **kwargs: object) -> DySample:
        """Build a named variant (``dysample``, ``dysample+``, ``dysample-s``, ``dysample-s+``).

        The paper's groups (4 for LP, 8 for PL) are the default; ``kwargs`` override any
        constructor argument (``groups``, ``anchor``, ``offset_init_std``, ``groups_fallback``).

        Example:
            >>> DySample.from_variant("dysample-s", in_channels=256).groups
            8
        """
        settings: dict[str, Any] = {**variant_settings(variant), **kwargs}
        return cls(in_channels, scale, **settings)

    @property
    def variant(self) -> str:
        """The family member this module is: ``dysample``, ``dysample+``, ``dysample-s`` or ``dysample-s+``."""
        return variant_name(self.style, self.dyscope)

    def _bilinear_init_pos(self) -> Tensor:
        """The spec's ``init_pos``: sub-pixel ``(i, j)`` sits at ``((j+0.5)/s - 0.5, (i+0.5)/s - 0.5)``."""
        s = self.scale
        sub = (torch.arange(s, dtype=torch.float32) + 0.5) / s - 0.5
        x_pos = sub.repeat(s)  # index i*s + j -> j
        y_pos = sub.repeat_interleave(s)  # index i*s + j -> i
        per_axis = torch.stack([x_pos, y_pos])[:, None, :].expand(2, self.groups, s * s)
        return per_axis.reshape(1, -1, 1, 1).clone()

    def reset_parameters(self) -> None:
        """Initialise as the paper does: ``offset.weight ~ N(0, offset_init_std)``, zero bias and scope.

        Example:
            >>> DySample(16, offset_init_std=0.0).offset.weight.abs().max().item()
            0.0
        """
        if self.offset_init_std > 0:
            nn.init.normal_(self.offset.weight, mean=0.0, std=self.offset_init_std)
        else:
            nn.init.zeros_(self.offset.weight)
        if self.offset.bias is not None:  # built with a bias, as the authors'
            nn.init.zeros_(self.offset.bias)
        if self.dyscope:
            nn.init.zeros_(self.scope.weight)

    def forward(
        self,
        x: Tensor,
        size: int | Sequence[int] | None = None,
        scale_factor: float | Sequence[float] | None = None,
    ) -> Tensor:
        """Upsample ``x``: to ``size``, by ``scale_factor`` (as ``F.interpolate``), else by the defaults.

        With neither argument the module's own ``size`` / ``scale_factor`` apply, and without
        those the output is ``scale`` times the input.

        Example:
            >>> up = DySample(8, scale=2, groups=2)
            >>> up(torch.randn(1, 8, 13, 13), size=(25, 25)).shape
            torch.Size([1, 8, 25, 25])
            >>> DySample(8, scale=2, groups=2, size=(9, 11))(torch.randn(1, 8, 5, 5)).shape
            torch.Size([1, 8, 9, 11])
        """
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.scale_factor
        if not _torch_compat.is_fx_symbolic_tracing():  # symbolic shapes cannot be checked while fx traces
            self._check_input(x)
        scope_weight = self.scope.weight if self.dyscope else None
        return dysample(
            x,
            self.offset.weight,
            self.offset.bias,
            scope_weight,
            self.scale,
            self.style,
            self.groups,
            size,
            scale_factor,
            self.anchor,
            sampler=self.sampler,
            positions=self.positions,
            init_pos=cast(Tensor, self.init_pos),
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("sampler", "auto")  # pickled before DySample had a sampler argument
        super().__setstate__(state)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"DySample expects a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"DySample was built for in_channels={self.in_channels} but got an input with "
                f"{x.shape[1]} channels (shape {tuple(x.shape)}); build it with in_channels={x.shape[1]}."
            )

    def extra_repr(self) -> str:
        scope = "dynamic" if self.dyscope else "static"
        return (
            (
                f"variant={self.variant}, in_channels={self.in_channels}, scale={self.scale}, groups={self.groups}, "
                f"style={self.style}, scope={scope}, anchor={self.anchor}"
            )
            + (f", positions={self.positions}" if self.positions != "grid" else "")
            + (f", sampler={self.sampler}" if self.sampler != "auto" else "")
            + "".join(
                f", {k}={v}" for k, v in (("size", self.size), ("scale_factor", self.scale_factor)) if v is not None
            )
        )
