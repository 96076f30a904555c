"""LDA-AQU, adaptive query-guided upsampling via local deformable attention (Du et al., ACM MM 2024).

LDA-AQU reads only the low-resolution feature ``x`` (B, C, h, w); it has no guide. Every output pixel
``(i, j)`` of the ``(H, W) = (2h, 2w)`` output *queries* ``k_u * k_u`` deformed sampling points of
``x`` and averages their values with attention weights::

    xn = LayerNorm_C(x);  q = Conv1x1(xn), k = Conv1x1'(xn)             # C -> C / reduction_factor, no bias
    q  = F.interpolate(q, (H, W), mode="bilinear", align_corners=True)  # one query per output pixel
    per channel group g (n_groups, C/(r*G) query channels each):
        d_t = range_factor * tanh(Conv3x3(GELU(LayerNorm(DWConv3x3(q_g))))) + base_t   # base_t in {-1,0,1}^2
    point t reads bilinearly (zeros outside, align_corners=True) at output position (i, j) + d_t, i.e. at
        input coordinate ((i + dy_t) * (h - 1) / (H - 1), (j + dx_t) * (w - 1) / (W - 1))
    k_t = sample(k_g) + rpb_t;  v_t = sample(x_g)                      # keys per group, values the raw x
    attn = softmax_t(q . k_t / sqrt(C / (r * nh)));  out = sum_t attn_t * v_t   # per head (nh)

:func:`local_deformable_attention` is that attention given ``q``, ``k``, ``v`` and the sampling offsets.
It loops over the ``k_u**2`` points: no tensor is larger than the output (the authors sample all points
into one ``k_u**2``-times-larger tensor), and the value step has a hand-written backward that saves only
the inputs (``v``, the grids, the weights) and recomputes each point's samples.

:class:`LDAAQU` is the authors' ``LDA_AQU`` with their constructor (the Faster R-CNN configuration is the
default: ``reduction_factor=4, nh=1, scale_factor=2.0, k_e=3, k_u=3, n_groups=2, range_factor=11,
rpb=True``), state-dict names (``proj_q``, ``proj_k``, ``conv_offset.{0,1.norm,3}``, ``layer_norm.norm``,
``relative_position_bias_table``; ``base_offset`` is a non-persistent buffer) and initialisation: PyTorch's
defaults, ``relative_position_bias_table ~ trunc_normal(std=0.02)``, then their ``init_weights()`` (which their
FPN calls and the constructor calls here): Xavier-uniform convolutions with zero bias, LayerNorms 1 / 0, the
last offset convolution all zero. The authors' attribute ``scale`` (the attention factor) is ``attn_scale``
here; ``scale`` is the integer ratio, as on the other upsamplers. Parameters at C=256: 39,410.

Exact at swap time: nothing. At initialisation the points are the fixed 3x3 grid in *output*-pixel units
around each output pixel, so the output is an attention-weighted mix of bilinear reads around the pixel,
never exactly the nearest or bilinear interpolation.

Other output sizes (``forward(x, size=...)``, a non-integer ``scale_factor``, odd sizes such as 13 -> 25):
the native ``(2h, 2w)`` output is computed and fitted to the request with
:func:`dysample_swap.upsamplers.sizing.fit_native` (every output pixel is a native pixel), so the learned
offsets keep the geometry they were trained for. With neither ``size`` nor ``scale_factor`` the output is
``2h x 2w`` (the module defaults ``size=`` / ``output_scale_factor=`` first).

Example:
    >>> import torch
    >>> up = LDAAQU(32)
    >>> x = torch.randn(1, 32, 13, 13)
    >>> up(x).shape, up(x, size=(25, 25)).shape
    (torch.Size([1, 32, 26, 26]), torch.Size([1, 32, 25, 25]))
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size, fit_native, requested_hw


def _grids(offset: Tensor, groups: int, points: int) -> Tensor:
    """``(B, groups * points * 2, H, W)`` offsets (output pixels, ``(dy, dx)``) -> ``(points, B*groups, H, W, 2)`` grids.

    The position ``(i + dy, j + dx)`` is normalised with ``H - 1`` and ``W - 1`` as the authors do, ``(x, y)`` last.
    """
    b, _, height, width = offset.shape
    off = offset.reshape(b * groups, points, 2, height, width)
    rows = torch.arange(height, device=offset.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=offset.device).view(1, 1, 1, width)
    gy = 2 * (off[:, :, 0] + rows) / (height - 1) - 1
    gx = 2 * (off[:, :, 1] + cols) / (width - 1) - 1
    return torch.stack((gx, gy), dim=-1).transpose(0, 1)


def _sample(values: Tensor, grid: Tensor) -> Tensor:
    """Bilinear reads of ``values`` at ``grid``, zeros outside, ``align_corners=True`` (the authors' ``grid_sample``)."""
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class _WeightedSamples(torch.autograd.Function):
    """``out = sum_t attn_t * sample(values, grid_t)`` per head, with a backward that recomputes the samples.

    ``values`` (B*G, C/G, h, w), ``grids`` (T, B*G, H, W, 2), ``attn`` (B, nh, T, H, W) -> (B, C, H, W).
    Only the inputs are saved; each point's samples are made again in the backward pass, one at a time.
    """

    @staticmethod
    def forward(ctx: Any, values: Tensor, grids: Tensor, attn: Tensor) -> Tensor:
        b, heads, points, height, width = attn.shape
        channels = values.shape[0] * values.shape[1] // b
        dtype = torch.promote_types(values.dtype, attn.dtype)
        out = values.new_zeros((b, heads, channels // heads, height, width), dtype=dtype)
        for t in range(points):
            sampled = _sample(values, grids[t].to(values.dtype)).reshape(b, heads, channels // heads, height, width)
            out.addcmul_(sampled, attn[:, :, t, None])
        ctx.save_for_backward(values, grids, attn)
        return out.view(b, channels, height, width)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        values, grids, attn = ctx.saved_tensors
        b, heads, points, height, width = attn.shape
        channels = grad.shape[1]
        want_values, want_grids, want_attn = ctx.needs_input_grad[:3]
        grad_heads = grad.reshape(b, heads, channels // heads, height, width)
        grad_values = torch.zeros_like(values) if want_values else None
        grad_grids = torch.zeros_like(grids) if want_grids else None
        grad_attn = torch.zeros_like(attn) if want_attn else None
        for t in range(points):
            grid = grids[t].to(values.dtype)
            if grad_attn is not None:  # a weight gets its point's samples times the output gradient, summed
                sampled = _sample(values, grid).reshape(b, heads, channels // heads, height, width)
                grad_attn[:, :, t] = (grad_heads * sampled).sum(dim=2).to(attn.dtype)
            if grad_values is not None or grad_grids is not None:  # the samples get weight times output gradient
                grad_sampled = (grad_heads * attn[:, :, t, None]).reshape(values.shape[0], -1, height, width)
                grad_in, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                    grad_sampled.to(values.dtype),
                    values,
                    grid,
                    0,  # bilinear
                    0,  # zeros padding
                    True,  # align_corners
                    [grad_values is not None, grad_grids is not None],
                )
                if grad_values is not None:
                    grad_values += grad_in
                if grad_grids is not None:
                    grad_grids[t] = grad_grid.to(grids.dtype)
        return grad_values, grad_grids, grad_attn


def local_deformable_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    offset: Tensor,
    *,
    groups: int = 1,
    num_heads: int = 1,
    key_bias: Tensor | None = None,
) -> Tensor:
    """LDA-AQU's attention: each output pixel attends to ``T`` bilinear samples of the low-resolution ``key``/``value``.

    For output pixel ``(i, j)``, point ``t`` and channel group ``g``, the sample position is ``(i + dy, j + dx)``
    with ``(dy, dx) = offset[b, (g*T + t)*2 : (g*T + t)*2 + 2, i, j]`` in *output*-pixel units, normalised with
    ``(H - 1, W - 1)`` for ``grid_sample(bilinear, zeros, align_corners=True)`` on the ``(h, w)`` maps. Then
    ``attn = softmax_t(q . (k_t + key_bias_t) / sqrt(Cq / num_heads))`` per head, ``out = sum_t attn_t * v_t``.

    Args:
        query: ``(B, Cq, H, W)``, one query per output pixel (``H, W >= 2``).
        key: ``(B, Cq, h, w)``; group ``g`` is channels ``[g*Cq/groups, (g+1)*Cq/groups)``.
        value: ``(B, C, h, w)``, grouped the same way; head ``n`` is channels ``[n*C/num_heads, ...)``.
        offset: ``(B, groups * T * 2, H, W)``, the sampling positions relative to each output pixel, ``(dy, dx)`` pairs.
        groups: offset groups (``n_groups``).
        num_heads: attention heads (``nh``).
        key_bias: ``(num_heads, T, Cq / num_heads)`` (any shape with those elements), added to every sampled key
            (the authors' ``relative_position_bias_table``), or ``None``.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> q, k, v = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), torch.randn(1, 8, 3, 3)
        >>> still = torch.zeros(1, 2, 6, 6)          # one point, no offset: v at (i, j) * (h - 1) / (H - 1)
        >>> out = local_deformable_attention(q, k, v, still)
        >>> torch.allclose(out, F.interpolate(v, (6, 6), mode="bilinear", align_corners=True), atol=1e-6)
        True
    """
    b, q_channels, height, width = query.shape
    if key.dim() != 4 or value.dim() != 4 or offset.dim() != 4:
        raise ValueError("local_deformable_attention: query, key, value and offset must be 4-D (B, C, H, W)")
    if key.shape[:2] != query.shape[:2] or value.shape[0] != b or key.shape[-2:] != value.shape[-2:]:
        raise ValueError(
            f"local_deformable_attention: key must be (B, Cq, h, w) with query's B, Cq and value (B, C, h, w) with "
            f"key's h, w; got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    if q_channels % groups or value.shape[1] % groups or q_channels % num_heads or value.shape[1] % num_heads:
        raise ValueError(
            f"local_deformable_attention: query channels {q_channels} and value channels {value.shape[1]} must be "
            f"multiples of groups={groups} and num_heads={num_heads}"
        )
    if offset.shape[0] != b or offset.shape[-2:] != query.shape[-2:] or offset.shape[1] % (2 * groups):
        raise ValueError(
            f"local_deformable_attention: offset must be (B, groups * T * 2, H, W) = ({b}, {groups} * T * 2, "
            f"{height}, {width}), got {tuple(offset.shape)}"
        )
    if height < 2 or width < 2:
        raise ValueError(
            f"local_deformable_attention: the output must be at least 2x2 (positions are normalised with H - 1, "
            f"W - 1), got {height}x{width}"
        )
    points = offset.shape[1] // (2 * groups)
    grids = _grids(offset, groups, points)
    key_g = key.reshape(b * groups, q_channels // groups, *key.shape[-2:])
    bias = None if key_bias is None else key_bias.reshape(num_heads, points, -1)
    scaled = query * (q_channels // num_heads) ** -0.5
    logits = []
    for t in range(points):
        k_t = _sample(key_g, grids[t]).reshape(b, q_channels, height, width)
        if bias is not None:
            k_t = k_t + bias[:, t].reshape(1, q_channels, 1, 1)
        logits.append((scaled * k_t).reshape(b, num_heads, -1, height, width).sum(dim=2))
    attn = torch.stack(logits, dim=2).softmax(dim=2)  # (B, nh, T, H, W)
    value_g = value.reshape(b * groups, value.shape[1] // groups, *value.shape[-2:])
    return _WeightedSamples.apply(value_g, grids, attn)


class LayerNormProxy(nn.Module):
    """``nn.LayerNorm`` over the channels of a ``(B, C, H, W)`` map (the authors' module, attribute ``norm``).

    Example:
        >>> y = LayerNormProxy(4)(torch.randn(2, 4, 3, 3))
        >>> y.shape, torch.allclose(y.mean(1), torch.zeros(2, 3, 3), atol=1e-6)
        (torch.Size([2, 4, 3, 3]), True)
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class LDAAQU(nn.Module):
    """LDA-AQU (ACM MM 2024), the authors' ``LDA_AQU``: an unguided x2 upsampler with local deformable attention.

    Args:
        in_channels: input (and output) channels; a multiple of ``reduction_factor * n_groups`` and of
            ``reduction_factor * nh``.
        reduction_factor: query/key channels are ``in_channels // reduction_factor``.
        nh: attention heads.
        scale_factor: the upsampling ratio (the authors' name; a whole number >= 2, e.g. 2.0).
        k_e: kernel size of the offset predictor's last convolution (odd).
        k_u: the sampling points are a ``k_u x k_u`` grid, deformed (odd).
        n_groups: offset groups.
        range_factor: the offsets are ``range_factor * tanh(.)`` output pixels (the authors' ``offset_range_factor``).
        rpb: learn a key bias per point and channel (``relative_position_bias_table``).
        size, output_scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample(size=...)`` /
            ``nn.Upsample(scale_factor=...)``; the latter so named because ``scale_factor`` is the authors' ratio).

    Parameters at ``in_channels=256`` (Faster R-CNN configuration, the defaults): 39,410.

    Example:
        >>> up = LDAAQU(256)
        >>> sum(p.numel() for p in up.parameters()), up.scale
        (39410, 2)
        >>> up(torch.randn(1, 256, 6, 5)).shape
        torch.Size([1, 256, 12, 10])
    """

    base_offset: Tensor

    def __init__(
        self,
        in_channels: int,
        reduction_factor: int = 4,
        nh: int = 1,
        scale_factor: float = 2.0,
        k_e: int = 3,
        k_u: int = 3,
        n_groups: int = 2,
        range_factor: float = 11,
        rpb: bool = True,
        *,
        size: Size | None = None,
        output_scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        check_defaults(size, output_scale_factor, "LDAAQU")
        if isinstance(scale_factor, bool) or not _whole_at_least_2(scale_factor):
            raise ValueError(
                f"LDAAQU scale_factor (the ratio) must be a whole number >= 2, got {scale_factor!r}; other output "
                f"sizes are forward(x, size=...) / forward(x, scale_factor=...) or output_scale_factor="
            )
        for name, value in (("reduction_factor", reduction_factor), ("nh", nh), ("n_groups", n_groups)):
            if value < 1:
                raise ValueError(f"LDAAQU {name} must be >= 1, got {value}")
        for divisor, what in (
            (reduction_factor * n_groups, "reduction_factor * n_groups"),
            (reduction_factor * nh, "reduction_factor * nh"),
        ):
            if in_channels < 1 or in_channels % divisor:
                raise ValueError(
                    f"LDAAQU in_channels={in_channels} must be a positive multiple of {what} = {divisor}; "
                    f"change the channels or the configuration"
                )
        for name, k in (("k_e", k_e), ("k_u", k_u)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"LDAAQU {name} must be odd and >= 1, got {k}")
        self.in_channels = in_channels
        self.reduction_factor = reduction_factor
        self.k_e = k_e
        self.k_u = k_u
        self.num_head = nh
        self.scale_factor = scale_factor
        self.n_groups = n_groups
        self.offset_range_factor = range_factor
        self.size = size
        self.output_scale_factor = output_scale_factor
        self.attn_dim = in_channels // (reduction_factor * nh)
        self.attn_scale = self.attn_dim**-0.5  # the authors' ``self.scale``
        self.rpb = rpb
        self.hidden_dim = in_channels // reduction_factor
        self.proj_q = nn.Conv2d(in_channels, self.hidden_dim, kernel_size=1, stride=1, padding=0, bias=False)
        self.proj_k = nn.Conv2d(in_channels, self.hidden_dim, kernel_size=1, stride=1, padding=0, bias=False)
        self.group_channel = in_channels // (reduction_factor * n_groups)
        self.conv_offset = nn.Sequential(
            nn.Conv2d(self.group_channel, self.group_channel, 3, 1, 1, groups=self.group_channel, bias=False),
            LayerNormProxy(self.group_channel),
            nn.GELU(),
            nn.Conv2d(self.group_channel, 2 * k_u**2, k_e, 1, k_e // 2),
        )
        self.layer_norm = LayerNormProxy(in_channels)
        self.pad = (k_u - 1) // 2
        base = torch.arange(-self.pad, self.pad + 1, dtype=torch.float32)
        base_offset = torch.stack([base.repeat_interleave(k_u), base.repeat(k_u)], dim=1).flatten()
        self.register_buffer("base_offset", base_offset.view(1, -1, 1, 1), persistent=False)
        self.relative_position_bias_table: nn.Parameter | None = None
        if rpb:
            self.relative_position_bias_table = nn.Parameter(torch.zeros(1, nh, 1, k_u**2, self.hidden_dim // nh))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.init_weights()

    @property
    def scale(self) -> int:
        """The integer ratio (``scale_factor`` as an int), the name the other upsamplers use.

        Example:
            >>> LDAAQU(16, scale_factor=4.0).scale
            4
        """
        return int(self.scale_factor)

    def init_weights(self) -> None:
        """The authors' ``init_weights``: Xavier-uniform convolutions, zero biases, LayerNorms 1 / 0, the last offset conv 0.

        Example:
            >>> LDAAQU(16).conv_offset[3].weight.abs().max().item()
            0.0
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        last = self.conv_offset[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def offsets(self, q: Tensor) -> Tensor:
        """Sampling offsets ``(B, n_groups * k_u**2 * 2, H, W)`` in output pixels from the upsampled queries ``q``.

        ``range_factor * tanh(conv_offset(q per group)) + base_offset``; pairs ``(dy, dx)``.

        Example:
            >>> up = LDAAQU(16)
            >>> up.offsets(torch.randn(1, 4, 6, 6))[0, :4, 0, 0].tolist()   # zero-initialised: the base grid
            [-1.0, -1.0, -1.0, 0.0]
        """
        b, _, height, width = q.shape
        predicted = self.conv_offset(q.reshape(b * self.n_groups, -1, height, width))
        offset = predicted.tanh().mul(self.offset_range_factor) + self.base_offset.to(q.dtype)
        return offset.reshape(b, -1, height, width)

    def native(self, x: Tensor) -> Tensor:
        """The authors' forward: ``(B, C, h, w)`` -> ``(B, C, scale*h, scale*w)``.

        Example:
            >>> LDAAQU(16).native(torch.randn(2, 16, 3, 4)).shape
            torch.Size([2, 16, 6, 8])
        """
        _, _, height, width = x.shape
        out_h, out_w = self.scale * height, self.scale * width
        xn = self.layer_norm(x)
        q = F.interpolate(self.proj_q(xn), (out_h, out_w), mode="bilinear", align_corners=True)
        k = self.proj_k(xn)
        return local_deformable_attention(
            q,
            k,
            x,
            self.offsets(q),
            groups=self.n_groups,
            num_heads=self.num_head,
            key_bias=self.relative_position_bias_table,
        )

    def forward(self, x: Tensor, size: Size | None = None, scale_factor: Factor | None = None) -> Tensor:
        """Upsample ``x`` to ``size`` / by ``scale_factor`` (``F.interpolate``'s meaning), else the defaults, else x ``scale``.

        Example:
            >>> LDAAQU(16)(torch.randn(1, 16, 13, 13), scale_factor=1.5).shape
            torch.Size([1, 16, 19, 19])
        """
        if x.dim() != 4:
            raise ValueError(
                f"LDAAQU: x must be a (B, {self.in_channels}, h, w) feature map, got {x.dim()}-D {tuple(x.shape)}; "
                f"add the batch dimension (x[None]) or pass a 4-D feature map"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"LDAAQU: x has {x.shape[1]} channels, the module was built for in_channels={self.in_channels}; "
                f"pass the matching feature or build LDAAQU({x.shape[1]})"
            )
        if min(x.shape[-2:]) < 1:
            raise ValueError(f"LDAAQU: x has an empty plane {tuple(x.shape)}; pass a feature map of at least 1x1")
        if size is None and scale_factor is None:
            size, scale_factor = self.size, self.output_scale_factor
        requested_hw(x.shape[-2], x.shape[-1], self.scale, size, scale_factor)  # refuse a bad request first
        return fit_native(self.native(x), self.scale, size, scale_factor)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, reduction_factor={self.reduction_factor}, nh={self.num_head}, "
            f"scale_factor={self.scale_factor}, k_e={self.k_e}, k_u={self.k_u}, n_groups={self.n_groups}, "
            f"range_factor={self.offset_range_factor}, rpb={self.rpb}"
        )


def _whole_at_least_2(value: object) -> bool:
    """Whether ``value`` is a finite whole number >= 2 (``2``, ``2.0``; not ``2.5``, ``"2"``)."""
    if not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and float(value).is_integer() and value >= 2
