"""FreqFusion, frequency-aware feature fusion (Chen et al., IEEE TPAMI 2024), in pure PyTorch.

FreqFusion fuses a low-resolution feature ``lr_feat`` (B, C_lr, h, w) into a high-resolution one
``hr_feat`` (B, C_hr, 2h, 2w), the *guide*. With the authors' defaults (``semi_conv``,
``comp_feat_upsample``, ``use_high_pass``, ``hamming_window``, ``hr_residual``)::

    Hc, Lc = Conv1x1(hr_feat), Conv1x1'(lr_feat)                     # C -> compressed_channels, bias
    mH  = Enc2(Hc);  Hc <- 2*Hc - CARAFE(Hc, norm_3(mH), 3, up=1)    # high-frequency boost of the guide
    mL  = Enc(Hc) + CARAFE(Enc(Lc), norm_5(Enc(Hc)), 5, up=2);  KL = norm_5(mL)     # adaptive low-pass
    mH <- mH + CARAFE(Enc2(Lc), KL, 5, up=2);                   KH = norm_3(mH)     # adaptive high-pass
    lr_up  = CARAFE(lr_feat, KL, 5, up=2)                        # the upsampled low-resolution feature
    hr_out = hr_feat + (hr_feat - CARAFE(hr_feat, KH, 3, up=1))  # the high-frequency-enhanced guide
    (feature_resample=True only) lr_up <- LocalSimGuidedSampler(Hc, Lc, lr_up)

``Enc`` / ``Enc2`` are the 3x3 convolutions ``content_encoder`` (-> 25 taps) and ``content_encoder2``
(-> 9 taps); ``norm_k`` (:func:`normalize_kernels`) is a softmax over the ``k*k`` taps times a ``k x k``
Hamming window, renormalised to sum 1; ``CARAFE`` is :func:`dysample_swap.upsamplers.carafe.carafe`
(mmcv's operator, zero padding; *not* the reflect-padding fallback in the authors' file, which they did not
run). The authors' FPN returns ``hr_out + lr_up``.

Two views of one module:

* :meth:`FreqFusion.fuse` ``(hr_feat, lr_feat) -> (mask_lr, hr_out, lr_up)`` is the authors' forward,
  every branch of their constructor flags included (their ``forward(hr_feat, lr_feat)``, high-res first).
* ``forward(x, guide)`` is the *upsampler view*: ``x`` = ``lr_feat``, ``guide`` = ``hr_feat``, and it
  returns ``lr_up`` only (bit for bit ``fuse(guide, x)[2]`` for a ``2h x 2w`` guide), the tensor that
  replaces ``F.interpolate(x)`` in ``F.interpolate(x) + lateral``.
  Applied: the compressors, the guide's high-frequency boost (it shapes ``KL``), the low-pass kernels
  ``KL``, the reassembly of ``x`` and, with ``feature_resample``, the resampler. Not applied: the
  refinement of the guide itself (``hr_out``; the lateral is added unchanged, where the authors' FPN adds
  ``hr_out``), and so not the ``Enc2(Lc)`` term of ``KH`` either (it feeds only ``hr_out``).
  ``content_encoder2`` still learns through the guide's boost (with ``semi_conv`` and
  ``comp_feat_upsample``, the defaults; in the other branches it feeds only ``hr_out`` and gets no
  gradient from the upsampler view).

Initialisation as the authors': Xavier-uniform convolutions with zero bias (every ``Conv2d``, the
resampler's included), then ``content_encoder`` and ``content_encoder2`` ``N(0, 0.001)``. State-dict
names are theirs (``hr_channel_compressor``, ``lr_channel_compressor``, ``content_encoder``,
``content_encoder2``, ``dysampler.*``, buffers ``hamming_lowpass``, ``hamming_highpass``), so their
weights load with ``strict=True``. Parameters at C=256: 52,514 (104,690 with ``feature_resample``).

Exact at swap time: nothing. The kernels are softmaxes (never one-hot), and at the authors'
initialisation ``lr_up`` is about a Hamming-weighted 5x5 average of ``x``, not nearest or bilinear.

Other output sizes (e.g. 13x13 -> 25x25): :class:`~dysample_swap.upsamplers.guided.GuidedUpsampler`.
:meth:`FreqFusion.fuse` follows the authors and needs ``hr_feat`` exactly ``2h x 2w`` (with ``semi_conv`` or
``feature_resample``; else ``lr_feat`` is resized to any ``hr_feat`` size, as theirs).

Example:
    >>> import torch
    >>> ff = FreqFusion(hr_channels=16, lr_channels=32)
    >>> x, guide = torch.randn(1, 32, 13, 13), torch.randn(1, 16, 25, 25)
    >>> ff(x, guide).shape, ff(x, guide, size=(25, 25)).shape
    (torch.Size([1, 32, 26, 26]), torch.Size([1, 32, 25, 25]))
"""

from __future__ import annotations

import math
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dysample_swap.upsamplers.carafe import carafe
from dysample_swap.upsamplers.guided import GuidedUpsampler, check_pair
from dysample_swap.upsamplers.options import check_defaults
from dysample_swap.upsamplers.sizing import Factor, Size

SCALE = 2
"""FreqFusion's ratio: its low-pass CARAFE reassembles ``lr_feat`` at ``up=2``."""


def hamming2d(rows: int, cols: int) -> Tensor:
    """The authors' ``hamming2D``: the outer product of numpy's ``hamming(rows)`` and ``hamming(cols)``, float32.

    ``hamming(M)[n] = 0.54 - 0.46 * cos(2 * pi * n / (M - 1))`` (``[1.0]`` for ``M == 1``), computed in float64
    as numpy does and rounded to float32 as the authors' ``torch.FloatTensor`` does.

    Example:
        >>> hamming2d(1, 3)
        tensor([[0.0800, 1.0000, 0.0800]])
    """

    def hamming(m: int) -> Tensor:
        if m == 1:
            return torch.ones(1, dtype=torch.float64)
        n = torch.arange(1 - m, m, 2, dtype=torch.float64)
        return 0.54 + 0.46 * torch.cos(math.pi * n / (m - 1))

    return torch.outer(hamming(rows), hamming(cols)).float()


def normalize_kernels(mask: Tensor, kernel_size: int, window: Tensor | None = None) -> Tensor:
    """FreqFusion's ``kernel_normalizer``: softmax over each group's ``k*k`` taps, times ``window``, renormalised.

    Args:
        mask: ``(N, group * k*k, H, W)``, channel ``g*k*k + dy*k + dx`` (mmcv's CARAFE layout).
        kernel_size: ``k``.
        window: ``k x k`` weights (any shape with ``k*k`` elements, or one element, or ``None`` for none).

    Returns:
        ``(N, group * k*k, H, W)``, each group's taps summing to 1.

    Example:
        >>> k = normalize_kernels(torch.zeros(1, 9, 2, 2), 3, hamming2d(3, 3))
        >>> torch.allclose(k.sum(1), torch.ones(1, 2, 2)), round(k[0, 4, 0, 0].item(), 4)
        (True, 0.7432)
    """
    n, channels, height, width = mask.shape
    taps = kernel_size * kernel_size
    if channels % taps:
        raise ValueError(
            f"normalize_kernels: {channels} mask channels are not a multiple of kernel_size**2 = {taps}; "
            f"pass (N, group * {taps}, H, W)"
        )
    grouped = F.softmax(mask.view(n, channels // taps, taps, height, width), dim=2)
    if window is not None:
        if window.numel() not in (1, taps):
            raise ValueError(f"normalize_kernels: window must have 1 or {taps} elements, got {window.numel()}")
        grouped = grouped * window.reshape(1, 1, -1, 1, 1).to(grouped.dtype)
        grouped = grouped / grouped.sum(dim=2, keepdim=True)
    return grouped.reshape(n, channels, height, width)


def local_cosine_similarity(x: Tensor, window: int = 3, dilation: int = 2) -> Tensor:
    """The authors' ``compute_similarity(x, window, dilation, sim="cos")``: cosine similarity to each neighbour.

    Channel ``t`` (row-major over the ``window x window`` neighbours at ``dilation``, the centre left out)
    is ``cos(x[:, :, i, j], x[:, :, i + dy, j + dx])`` over channels, 0 outside the map (zero padding). Computed
    one neighbour at a time (no ``window**2``-times-larger unfold).

    Returns:
        ``(B, window**2 - 1, H, W)``.

    Example:
        >>> s = local_cosine_similarity(torch.ones(1, 4, 5, 5))
        >>> s.shape, s[0, :, 2, 2].tolist(), s[0, 0, 0, 0].item()
        (torch.Size([1, 8, 5, 5]), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 0.0)
    """
    _, _, height, width = x.shape
    pad = (window // 2) * dilation
    padded = F.pad(x, (pad, pad, pad, pad))
    centre = window * window // 2
    sims = []
    for t in range(window * window):
        if t == centre:
            continue
        dy, dx = divmod(t, window)
        neighbour = padded[..., dy * dilation : dy * dilation + height, dx * dilation : dx * dilation + width]
        sims.append(F.cosine_similarity(x, neighbour, dim=1))
    return torch.stack(sims, dim=1)


class LocalSimGuidedSampler(nn.Module):
    """FreqFusion's offset generator (``feature_resample=True``): resamples the upsampled feature, DySample-style.

    Offsets and a sigmoid scope are predicted from both resolutions (each a GroupNorm'd compressed feature,
    concatenated with its cosine similarity to 8 neighbours at dilation 2; the high-resolution branches
    pixel-unshuffled), added to a fixed sub-pixel grid ``init_pos`` and used by ``grid_sample`` (bilinear,
    border padding, ``align_corners=False``) in ``groups`` channel groups. The authors' constructor and names.

    Example:
        >>> s = LocalSimGuidedSampler(64, kernel_size=3)
        >>> s(torch.randn(1, 64, 8, 6), torch.randn(1, 64, 4, 3), torch.randn(1, 32, 8, 6)).shape
        torch.Size([1, 32, 8, 6])
    """

    init_pos: Tensor

    def __init__(
        self,
        in_channels: int,
        scale: int = 2,
        style: str = "lp",
        groups: int = 4,
        use_direct_scale: bool = True,
        kernel_size: int = 1,
        local_window: int = 3,
        sim_type: str = "cos",
        norm: bool = True,
        direction_feat: str = "sim_concat",
    ) -> None:
        super().__init__()
        if scale != 2 or style != "lp":
            raise ValueError(
                f"LocalSimGuidedSampler supports scale=2, style='lp' only (as the authors), got {scale}, {style!r}"
            )
        if direction_feat not in ("sim", "sim_concat"):
            raise ValueError(
                f"LocalSimGuidedSampler direction_feat must be 'sim' or 'sim_concat', got {direction_feat!r}"
            )
        if in_channels < groups or in_channels % groups:
            raise ValueError(f"LocalSimGuidedSampler: in_channels={in_channels} must be a multiple of groups={groups}")
        if norm and (in_channels < 8 or in_channels % 8):
            raise ValueError(
                f"LocalSimGuidedSampler: norm=True uses GroupNorm(in_channels // 8, in_channels); in_channels={in_channels} "
                f"must be a positive multiple of 8 (FreqFusion: compressed_channels), or pass norm=False"
            )
        self.scale = scale
        self.style = style
        self.groups = groups
        self.local_window = local_window
        self.sim_type = sim_type  # stored as the authors do; their forward always uses cosine similarity
        self.direction_feat = direction_feat
        sim_channels = local_window**2 - 1
        feat_channels = sim_channels if direction_feat == "sim" else in_channels + sim_channels
        scale_in = in_channels if direction_feat == "sim" else in_channels + sim_channels
        out_channels = 2 * groups * scale**2

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=kernel_size // 2)

        self.offset = conv(feat_channels, out_channels)
        _normal_init(self.offset, std=0.001)
        self.direct_scale: nn.Conv2d | None = None
        if use_direct_scale:
            self.direct_scale = conv(scale_in, out_channels)
            _constant_init(self.direct_scale, 0.0)
        self.hr_offset = conv(feat_channels, 2 * groups)
        _normal_init(self.hr_offset, std=0.001)
        self.hr_direct_scale: nn.Conv2d | None = None
        if use_direct_scale:
            self.hr_direct_scale = conv(scale_in, 2 * groups)
            _constant_init(self.hr_direct_scale, 0.0)
        self.norm = norm
        self.norm_hr: nn.Module = nn.GroupNorm(in_channels // 8, in_channels) if norm else nn.Identity()
        self.norm_lr: nn.Module = nn.GroupNorm(in_channels // 8, in_channels) if norm else nn.Identity()
        self.register_buffer("init_pos", self._init_pos())

    def _init_pos(self) -> Tensor:
        """The sub-pixel centres ``(+-1/4)`` of the x2 cell: ``(1, 2 * groups * 4, 1, 1)``, x components first."""
        h = torch.arange((-self.scale + 1) / 2, (self.scale - 1) / 2 + 1) / self.scale
        grid = torch.stack(torch.meshgrid([h, h], indexing="ij")).transpose(1, 2)
        return grid.repeat(1, self.groups, 1).reshape(1, -1, 1, 1)

    def sample(self, x: Tensor, offset: Tensor) -> Tensor:
        """Sample ``x`` (B, C, sH, sW) at the low-resolution ``offset`` (B, 2 * groups * s*s, H, W) positions.

        Example:
            >>> s = LocalSimGuidedSampler(64)
            >>> x = torch.randn(1, 8, 4, 6)
            >>> torch.allclose(s.sample(x, s.init_pos.expand(1, -1, 2, 3)), x, atol=1e-6)
            True
        """
        scale = self.scale
        b, _, height, width = offset.shape
        offset = offset.reshape(b, 2, -1, height, width)
        coords_h = torch.arange(height, device=x.device, dtype=x.dtype) + 0.5
        coords_w = torch.arange(width, device=x.device, dtype=x.dtype) + 0.5
        coords = torch.stack(torch.meshgrid([coords_w, coords_h], indexing="ij")).transpose(1, 2)[None, :, None]
        normalizer = torch.tensor([width, height], dtype=x.dtype, device=x.device).view(1, 2, 1, 1, 1)
        coords = 2 * (coords + offset) / normalizer - 1
        grid = F.pixel_shuffle(coords.reshape(b, -1, height, width), scale)
        grid = grid.reshape(b, 2, -1, scale * height, scale * width).permute(0, 2, 3, 4, 1).contiguous().flatten(0, 1)
        sampled = F.grid_sample(
            x.reshape(b * self.groups, -1, x.size(-2), x.size(-1)),
            grid,
            mode="bilinear",
            align_corners=False,
            padding_mode="border",
        )
        return sampled.reshape(b, -1, scale * height, scale * width)

    def get_offset_lp(self, hr_x: Tensor, lr_x: Tensor, hr_sim: Tensor, lr_sim: Tensor) -> Tensor:
        """The authors' offsets: ``(offset(lr_sim) + unshuffle(hr_offset(hr_sim))) * sigmoid(scope) + init_pos``."""
        if self.direct_scale is not None and self.hr_direct_scale is not None:
            moved = self.offset(lr_sim) + F.pixel_unshuffle(self.hr_offset(hr_sim), self.scale)
            scope = self.direct_scale(lr_x) + F.pixel_unshuffle(self.hr_direct_scale(hr_x), self.scale)
            return moved * scope.sigmoid() + self.init_pos
        return (self.offset(lr_x) + F.pixel_unshuffle(self.hr_offset(hr_x), self.scale)) * 0.25 + self.init_pos

    def forward(self, hr_x: Tensor, lr_x: Tensor, feat2sample: Tensor) -> Tensor:
        hr_x = self.norm_hr(hr_x)
        lr_x = self.norm_lr(lr_x)
        hr_sim = local_cosine_similarity(hr_x, self.local_window, dilation=2)
        lr_sim = local_cosine_similarity(lr_x, self.local_window, dilation=2)
        if self.direction_feat == "sim_concat":
            hr_sim = torch.cat([hr_x, hr_sim], dim=1)
            lr_sim = torch.cat([lr_x, lr_sim], dim=1)
            hr_x, lr_x = hr_sim, lr_sim
        return self.sample(feat2sample, self.get_offset_lp(hr_x, lr_x, hr_sim, lr_sim))


class FreqFusion(GuidedUpsampler):
    """FreqFusion (TPAMI 2024): :meth:`fuse` is the authors' forward, ``forward(x, guide)`` the upsampler view.

    Args:
        hr_channels: channels of the high-resolution feature (the guide).
        lr_channels: channels of the low-resolution feature ``x`` (and of the upsampled output).
        scale_factor: the authors' content-encoder multiplier; their forward works only with 1 (the ratio is 2).
        lowpass_kernel, highpass_kernel: odd CARAFE kernel sizes of the low- and high-pass filters.
        up_group: CARAFE channel groups.
        encoder_kernel, encoder_dilation: the content encoders' kernel size and dilation.
        compressed_channels: output channels of the two compressors (the authors' necks: (C_hr + C_lr) // 8).
        align_corners, upsample_mode: how ``lr_feat`` is resized when ``semi_conv=False``.
        feature_resample: add the :class:`LocalSimGuidedSampler` resampling (``dysampler``).
        feature_resample_group: its channel groups.
        comp_feat_upsample: predict the kernels with CARAFE-upsampled low-resolution masks (else nearest).
        use_high_pass: compute the high-pass kernels and ``hr_out`` (``content_encoder2``).
        use_low_pass: stored (the authors' forward always low-passes).
        hr_residual: ``hr_out = hr_feat + high-pass`` (else the high-pass alone).
        semi_conv: reassemble ``lr_feat`` at ``up=2`` (else resize it first, then ``up=1``).
        hamming_window: weight the kernels with a Hamming window (buffers ``hamming_lowpass/highpass``).
        feature_resample_norm: GroupNorm in the resampler.
        size, output_scale_factor: defaults for ``forward`` when it gets neither (as ``nn.Upsample(size=...)``
            / ``nn.Upsample(scale_factor=...)``; the latter so named because ``scale_factor`` is the authors').

    Parameters at ``hr_channels = lr_channels = 256``: 52,514 (104,690 with ``feature_resample=True``).

    Example:
        >>> ff = FreqFusion(256, 256)
        >>> sum(p.numel() for p in ff.parameters())
        52514
        >>> mask_lr, hr_out, lr_up = ff.fuse(torch.randn(1, 256, 12, 10), torch.randn(1, 256, 6, 5))
        >>> mask_lr.shape, hr_out.shape, lr_up.shape
        (torch.Size([1, 25, 12, 10]), torch.Size([1, 256, 12, 10]), torch.Size([1, 256, 12, 10]))
    """

    x_channels_arg: ClassVar[str | None] = "lr_channels"
    guide_channels_arg: ClassVar[str] = "hr_channels"
    default_factor_arg: ClassVar[str] = "output_scale_factor"

    hamming_lowpass: Tensor
    hamming_highpass: Tensor

    def __init__(
        self,
        hr_channels: int,
        lr_channels: int,
        scale_factor: int = 1,
        lowpass_kernel: int = 5,
        highpass_kernel: int = 3,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
        align_corners: bool = False,
        upsample_mode: str = "nearest",
        feature_resample: bool = False,
        feature_resample_group: int = 4,
        comp_feat_upsample: bool = True,
        use_high_pass: bool = True,
        use_low_pass: bool = True,
        hr_residual: bool = True,
        semi_conv: bool = True,
        hamming_window: bool = True,
        feature_resample_norm: bool = True,
        *,
        size: Size | None = None,
        output_scale_factor: Factor | None = None,
    ) -> None:
        super().__init__()
        check_defaults(size, output_scale_factor, "FreqFusion")
        if scale_factor != 1:
            raise ValueError(
                f"FreqFusion scale_factor is the authors' content-encoder multiplier and their forward works only "
                f"with 1 (the upsampling ratio is fixed at 2), got {scale_factor!r}; leave scale_factor=1"
            )
        for name, k in (("lowpass_kernel", lowpass_kernel), ("highpass_kernel", highpass_kernel)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"FreqFusion {name} must be odd and >= 1 (a CARAFE kernel), got {k}")
        for name, c in (
            ("hr_channels", hr_channels),
            ("lr_channels", lr_channels),
            ("compressed_channels", compressed_channels),
        ):
            if c < 1 or c % up_group:
                raise ValueError(f"FreqFusion {name}={c} must be a positive multiple of up_group={up_group}")
        if semi_conv and comp_feat_upsample and not use_high_pass:
            raise ValueError(
                "FreqFusion: comp_feat_upsample=True needs use_high_pass=True (the authors' forward raises "
                "NotImplementedError otherwise); pass use_high_pass=True or comp_feat_upsample=False"
            )
        self.hr_channels = hr_channels
        self.lr_channels = lr_channels
        self.scale_factor = scale_factor
        self.lowpass_kernel = lowpass_kernel
        self.highpass_kernel = highpass_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.size = size
        self.output_scale_factor = output_scale_factor
        padding = (encoder_kernel - 1) * encoder_dilation // 2
        self.hr_channel_compressor = nn.Conv2d(hr_channels, compressed_channels, 1)
        self.lr_channel_compressor = nn.Conv2d(lr_channels, compressed_channels, 1)

        def encoder(kernel: int) -> nn.Conv2d:  # a filter generator: kernel**2 taps per group
            taps = kernel**2 * up_group * scale_factor * scale_factor
            return nn.Conv2d(compressed_channels, taps, encoder_kernel, padding=padding, dilation=encoder_dilation)

        self.content_encoder = encoder(lowpass_kernel)  # the adaptive low-pass filter generator
        self.align_corners = align_corners
        self.upsample_mode = upsample_mode
        self.hr_residual = hr_residual
        self.use_high_pass = use_high_pass
        self.use_low_pass = use_low_pass
        self.semi_conv = semi_conv
        self.feature_resample = feature_resample
        self.comp_feat_upsample = comp_feat_upsample
        self.dysampler: LocalSimGuidedSampler | None = None
        if feature_resample:
            self.dysampler = LocalSimGuidedSampler(
                in_channels=compressed_channels,
                scale=2,
                style="lp",
                groups=feature_resample_group,
                use_direct_scale=True,
                kernel_size=encoder_kernel,
                norm=feature_resample_norm,
            )
        self.content_encoder2: nn.Conv2d | None = None
        if use_high_pass:
            self.content_encoder2 = encoder(highpass_kernel)  # the adaptive high-pass filter generator
        self.hamming_window = hamming_window
        if hamming_window:
            self.register_buffer("hamming_lowpass", hamming2d(lowpass_kernel, lowpass_kernel)[None, None])
            self.register_buffer("hamming_highpass", hamming2d(highpass_kernel, highpass_kernel)[None, None])
        else:
            self.register_buffer("hamming_lowpass", torch.tensor([1.0]))
            self.register_buffer("hamming_highpass", torch.tensor([1.0]))
        self.init_weights()

    @property
    def scale(self) -> int:
        """The native ratio, 2 (the name the other upsamplers use; ``scale_factor`` is the authors' multiplier).

        Example:
            >>> FreqFusion(8, 8).scale
            2
        """
        return SCALE

    def init_weights(self) -> None:
        """The authors' initialisation: every ``Conv2d`` Xavier-uniform with zero bias, then both encoders ``N(0, 0.001)``.

        Example:
            >>> ff = FreqFusion(8, 8)
            >>> ff.content_encoder.weight.std().item() < 0.01, ff.hr_channel_compressor.bias.abs().max().item()
            (True, 0.0)
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        _normal_init(self.content_encoder, std=0.001)
        if self.content_encoder2 is not None:
            _normal_init(self.content_encoder2, std=0.001)

    def kernel_normalizer(self, mask: Tensor, kernel: int, hamming: Tensor) -> Tensor:
        """:func:`normalize_kernels` with this module's window (a one-element buffer without ``hamming_window``).

        Example:
            >>> ff = FreqFusion(8, 8)
            >>> ff.kernel_normalizer(torch.randn(1, 25, 4, 4), 5, ff.hamming_lowpass).sum(1).allclose(torch.ones(1, 4, 4))
            True
        """
        return normalize_kernels(mask, kernel, hamming)

    def _encoder2(self) -> nn.Conv2d:
        return cast(nn.Conv2d, self.content_encoder2)  # built whenever the calling branch runs (use_high_pass)

    def _compute(self, hr_feat: Tensor, lr_feat: Tensor, need_hr: bool) -> tuple[Tensor, Tensor, Tensor]:
        """The authors' ``_forward``; ``need_hr=False`` skips what feeds only ``hr_out`` (returned as ``hr_feat``)."""
        kl, kh, group = self.lowpass_kernel, self.highpass_kernel, self.up_group
        hr_c = self.hr_channel_compressor(hr_feat)
        lr_c = self.lr_channel_compressor(lr_feat)
        hr_size = hr_c.shape[-2:]
        mask_hr: Tensor | None = None
        if self.semi_conv:
            if self.comp_feat_upsample:
                mask_hr_hr = self._encoder2()(hr_c)
                init_hr = self.kernel_normalizer(mask_hr_hr, kh, self.hamming_highpass)
                hr_c = hr_c + hr_c - carafe(hr_c, init_hr, kh, group, 1)  # high-frequency boost of the guide
                mask_lr_hr = self.content_encoder(hr_c)
                init_lr = self.kernel_normalizer(mask_lr_hr, kl, self.hamming_lowpass)
                mask_lr_lr = _nearest(carafe(self.content_encoder(lr_c), init_lr, kl, group, 2), hr_size)
                mask_lr = self.kernel_normalizer(mask_lr_hr + mask_lr_lr, kl, self.hamming_lowpass)
                if need_hr:  # the authors normalise mask_lr here too: the same tensor as below
                    up = carafe(self._encoder2()(lr_c), mask_lr, kl, group, 2)
                    mask_hr = mask_hr_hr + _nearest(up, hr_size)
            else:
                mask_lr = self.content_encoder(hr_c) + _nearest(self.content_encoder(lr_c), hr_size)
                mask_lr = self.kernel_normalizer(mask_lr, kl, self.hamming_lowpass)
                if self.use_high_pass and need_hr:
                    mask_hr = self._encoder2()(hr_c) + _nearest(self._encoder2()(lr_c), hr_size)
        else:
            compressed = _nearest(lr_c, hr_size) + hr_c
            mask_lr = self.kernel_normalizer(self.content_encoder(compressed), kl, self.hamming_lowpass)
            if self.use_high_pass and need_hr:
                mask_hr = self._encoder2()(compressed)
        if self.semi_conv:
            lr_up = carafe(lr_feat, mask_lr, kl, group, 2)
        else:
            align = None if self.upsample_mode == "nearest" else self.align_corners
            resized = F.interpolate(lr_feat, size=hr_feat.shape[2:], mode=self.upsample_mode, align_corners=align)
            lr_up = carafe(resized, mask_lr, kl, group, 1)
        hr_out = hr_feat
        if mask_hr is not None:
            mask_hr = self.kernel_normalizer(mask_hr, kh, self.hamming_highpass)
            high = hr_feat - carafe(hr_feat, mask_hr, kh, group, 1)
            hr_out = high + hr_feat if self.hr_residual else high
        if self.dysampler is not None:
            lr_up = self.dysampler(hr_x=hr_c, lr_x=lr_c, feat2sample=lr_up)
        return mask_lr, hr_out, lr_up

    def fuse(self, hr_feat: Tensor, lr_feat: Tensor, use_checkpoint: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The authors' forward: ``(mask_lr, hr_out, lr_up)`` from ``hr_feat`` (B, C_hr, 2h, 2w), ``lr_feat`` (B, C_lr, h, w).

        ``mask_lr`` (B, up_group * lowpass_kernel**2, 2h, 2w) are the normalised low-pass kernels, ``hr_out`` the
        high-frequency-enhanced ``hr_feat`` (``hr_feat`` itself without ``use_high_pass``), ``lr_up`` the
        upsampled ``lr_feat``; the authors' FPN adds ``hr_out + lr_up``. ``use_checkpoint`` recomputes the
        forward in the backward pass (``torch.utils.checkpoint``), as theirs.

        Example:
            >>> ff = FreqFusion(8, 4)
            >>> [t.shape[1] for t in ff.fuse(torch.randn(1, 8, 6, 4), torch.randn(1, 4, 3, 2))]
            [25, 8, 4]
        """
        check_pair(
            lr_feat,
            hr_feat,
            "FreqFusion",
            ("lr_channels", self.lr_channels),
            ("hr_channels", self.hr_channels),
            names=("lr_feat", "hr_feat"),
            order="FreqFusion.fuse takes the authors' order: the high-resolution hr_feat first, then lr_feat",
        )
        height, width = lr_feat.shape[-2:]
        if (self.semi_conv or self.feature_resample) and tuple(hr_feat.shape[-2:]) != (SCALE * height, SCALE * width):
            raise ValueError(
                f"FreqFusion.fuse: hr_feat must be exactly twice lr_feat's size, {(SCALE * height, SCALE * width)}, "
                f"got {tuple(hr_feat.shape[-2:])} (the authors' CARAFE at up=2 and resampler need it); resize one of them, or use "
                f"forward(x, guide, size=...), which resizes the guide"
            )
        if use_checkpoint:
            return checkpoint(self._compute, hr_feat, lr_feat, True, use_reentrant=False)
        return self._compute(hr_feat, lr_feat, need_hr=True)

    def native(self, x: Tensor, guide: Tensor) -> Tensor:
        """The upsampler view: :meth:`fuse`'s ``lr_up`` (without computing ``hr_out``) of ``x`` = ``lr_feat`` (B, C_lr, h, w).

        The guide = ``hr_feat`` is at ``(2h, 2w)``.

        Example:
            >>> ff = FreqFusion(8, 8)
            >>> ff(torch.randn(1, 8, 13, 13), torch.randn(1, 8, 25, 25), scale_factor=1.5).shape
            torch.Size([1, 8, 19, 19])
        """
        return self._compute(guide, x, need_hr=False)[2]

    def extra_repr(self) -> str:
        return (
            f"hr_channels={self.hr_channels}, lr_channels={self.lr_channels}, lowpass_kernel={self.lowpass_kernel}, "
            f"highpass_kernel={self.highpass_kernel}, up_group={self.up_group}, "
            f"compressed_channels={self.compressed_channels}, feature_resample={self.feature_resample}, scale={SCALE}"
        )


def _nearest(t: Tensor, size: torch.Size) -> Tensor:
    """``F.interpolate(t, size, mode="nearest")``, skipped when ``t`` already has that size (then it is the identity)."""
    if t.shape[-2:] == size:
        return t
    return F.interpolate(t, size=size, mode="nearest")


def _normal_init(conv: nn.Conv2d, std: float) -> None:
    """mmcv's ``normal_init(conv, std=std)``: weight ``N(0, std)``, bias 0."""
    nn.init.normal_(conv.weight, 0.0, std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _constant_init(conv: nn.Conv2d, value: float) -> None:
    """The authors' ``constant_init(conv, val=value)``: weight ``value``, bias 0."""
    nn.init.constant_(conv.weight, value)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
