"""CARAFE: the operator against mmcv's compiled kernel, the module against mmcv's definition, memory, sizes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import LargestTensor

from dysample_swap import CARAFEPack, carafe, exact_at_swap

DATA = Path("/work/shared/data/carafe")


def _load(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(DATA / name, dtype="<f4").reshape(shape))


def _unfold_carafe(features: torch.Tensor, kernels: torch.Tensor, k: int, group: int, scale: int) -> torch.Tensor:
    """An independent formulation (the memory-hungry one): unfold the k*k neighbourhoods, repeat to the output size."""
    n, c, h, w = features.shape
    patches = F.unfold(features, k, padding=(k - 1) // 2).view(n, group, c // group, k * k, h, w)
    patches = patches.repeat_interleave(scale, dim=4).repeat_interleave(scale, dim=5)
    weights = kernels.view(n, group, 1, k * k, scale * h, scale * w)
    return (patches * weights).sum(dim=3).reshape(n, c, scale * h, scale * w)


@pytest.mark.skipif(not DATA.exists(), reason="mmcv reference data not present")
def test_operator_matches_mmcv_kernel_output_and_both_gradients() -> None:
    feat = _load("carafe_feat.bin", (2, 64, 3, 3)).requires_grad_()
    mask = _load("carafe_mask.bin", (2, 100, 6, 6)).requires_grad_()
    out = carafe(feat, mask, kernel_size=5, group=4, scale=2)
    out.sum().backward()
    torch.testing.assert_close(out, _load("carafe_output.bin", (2, 64, 6, 6)), atol=1e-5, rtol=0)
    torch.testing.assert_close(feat.grad, _load("carafe_feat_grad.bin", (2, 64, 3, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(mask.grad, _load("carafe_mask_grad.bin", (2, 100, 6, 6)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("k", "group", "scale"), [(5, 1, 2), (3, 2, 3), (1, 4, 2), (5, 4, 4)])
def test_operator_matches_unfold_formulation_in_float64(k: int, group: int, scale: int) -> None:
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 5, 7, dtype=torch.float64, generator=g)
    mask = torch.rand(2, group * k * k, 5 * scale, 7 * scale, dtype=torch.float64, generator=g)
    torch.testing.assert_close(
        carafe(feat, mask, k, group, scale), _unfold_carafe(feat, mask, k, group, scale), atol=1e-12, rtol=0
    )


def test_operator_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 4, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.rand(1, 2 * 9, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, 3, 2, 2), (feat, mask), fast_mode=True)


@pytest.mark.parametrize("wanted", ["features", "kernels", "both"])
def test_operator_gradients_match_autograd_of_the_unfold_formulation(wanted: str) -> None:
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 6, 4, 5, dtype=torch.float64, generator=g)
    mask = torch.rand(2, 3 * 25, 8, 10, dtype=torch.float64, generator=g)
    weight = torch.randn(2, 6, 8, 10, dtype=torch.float64, generator=g)
    inputs = {"features": [feat], "kernels": [mask], "both": [feat, mask]}[wanted]
    grads = []
    for op in (carafe, _unfold_carafe):
        leaves = [t.clone().requires_grad_(any(t is i for i in inputs)) for t in (feat, mask)]
        out = op(*leaves, 5, 3, 2)
        grads.append(torch.autograd.grad((out * weight).sum(), [leaf for leaf in leaves if leaf.requires_grad]))
    for ours, reference in zip(*grads):
        torch.testing.assert_close(ours, reference, atol=1e-12, rtol=0)


def test_operator_dtypes_autocast_and_channels_last() -> None:
    feat = torch.randn(1, 4, 3, 3, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.rand(1, 9, 6, 6, requires_grad=True)
    out = carafe(feat, mask, 3, 1, 2)
    out.sum().backward()
    assert (out.dtype, feat.grad.dtype, mask.grad.dtype) == (torch.float32, torch.bfloat16, torch.float32)
    up = CARAFEPack(16, 2)
    x = torch.randn(1, 16, 7, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = up(x)
    y.float().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in up.parameters())
    x = torch.randn(1, 16, 7, 7)
    torch.testing.assert_close(up(x.to(memory_format=torch.channels_last)), up(x), atol=1e-6, rtol=0)


def test_operator_rejects_bad_shapes_with_the_values() -> None:
    feat, mask = torch.randn(1, 6, 3, 3), torch.rand(1, 25, 6, 6)
    with pytest.raises(ValueError, match=r"kernels must have shape \(1, 25, 6, 6\).*got \(1, 25, 5, 6\)"):
        carafe(feat, mask[..., :5, :], 5, 1, 2)
    with pytest.raises(ValueError, match="6 feature channels are not divisible by group=4"):
        carafe(feat, torch.rand(1, 100, 6, 6), 5, 4, 2)
    with pytest.raises(ValueError, match="odd"):
        carafe(feat, torch.rand(1, 16, 6, 6), 4, 1, 2)


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    feat = torch.randn(1, 32, 16, 16, requires_grad=True)
    mask = torch.rand(1, 25, 32, 32, requires_grad=True)
    with LargestTensor() as probe:
        out = carafe(feat, mask, 5, 1, 2)
        out.square().sum().backward()
    assert probe.largest == out.numel()  # the unfold formulation makes 25x this
    with LargestTensor() as probe:
        _unfold_carafe(feat.detach(), mask.detach(), 5, 1, 2)
    assert probe.largest == 25 * out.numel()


def _mmcv_pack_forward(up: CARAFEPack, x: torch.Tensor) -> torch.Tensor:
    """mmcv's CARAFEPack forward written out with explicit channel indices instead of pixel_shuffle."""
    k2, s, g = up.up_kernel**2, up.scale_factor, up.up_group
    n, _, h, w = x.shape
    encoded = F.conv2d(
        F.conv2d(x, up.channel_compressor.weight, up.channel_compressor.bias),
        up.content_encoder.weight,
        up.content_encoder.bias,
        padding=(up.encoder_kernel - 1) // 2,
    )
    # encoder channel (grp*k2 + tap)*s*s + i*s + j holds tap `tap` of output pixel (s*y + i, s*x + j)
    kernels = encoded.view(n, g, k2, s, s, h, w).permute(0, 1, 2, 5, 3, 6, 4).reshape(n, g, k2, s * h, s * w)
    kernels = kernels.exp() / kernels.exp().sum(dim=2, keepdim=True)
    return _unfold_carafe(x, kernels.reshape(n, g * k2, s * h, s * w), up.up_kernel, g, s)


@pytest.mark.parametrize(("scale", "group"), [(2, 1), (2, 4), (3, 2)])
def test_pack_forward_is_mmcvs(scale: int, group: int) -> None:
    torch.manual_seed(0)
    up = CARAFEPack(16, scale, up_group=group).double()
    with torch.no_grad():
        up.content_encoder.weight.normal_(std=0.3)  # kernels far from uniform
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(up(x), _mmcv_pack_forward(up, x), atol=1e-12, rtol=0)


def test_pack_names_shapes_and_init_are_mmcvs() -> None:
    torch.manual_seed(0)
    up = CARAFEPack(256, 2)
    shapes = {k: tuple(v.shape) for k, v in up.state_dict().items()}
    assert shapes == {
        "channel_compressor.weight": (64, 256, 1, 1),
        "channel_compressor.bias": (64,),
        "content_encoder.weight": (100, 64, 3, 3),
        "content_encoder.bias": (100,),
    }
    bound = math.sqrt(6 / (256 + 64))  # Xavier-uniform, gain 1
    w = up.channel_compressor.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert abs(up.content_encoder.weight.std().item() - 0.001) < 1e-4
    assert up.channel_compressor.bias.abs().max() == 0 and up.content_encoder.bias.abs().max() == 0
    dilated = CARAFEPack(8, 2, up_kernel=3, up_group=2, encoder_kernel=5, encoder_dilation=2, compressed_channels=16)
    assert dilated.content_encoder.weight.shape == (3 * 3 * 2 * 4, 16, 5, 5)
    assert dilated.content_encoder.padding == (4, 4) and dilated.content_encoder.dilation == (2, 2)
    assert dilated(torch.randn(1, 8, 7, 9)).shape == (1, 8, 14, 18)


def test_pack_at_init_is_close_to_a_5x5_average_not_the_interpolation() -> None:
    torch.manual_seed(0)
    up = CARAFEPack(8, 2)
    x = torch.randn(1, 8, 9, 9)
    average = (
        F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True).repeat_interleave(2, 2).repeat_interleave(2, 3)
    )
    torch.testing.assert_close(up(x), average, atol=0.02, rtol=0)  # N(0, 0.001) encoder: kernels within ~2% of 1/25
    assert (up(x) - F.interpolate(x, scale_factor=2, mode="bilinear")).abs().max() > 0.5
    assert not any(exact_at_swap("carafe", a, native=n) for a in ("bilinear", "nearest") for n in (True, False))


def _nearest_source(in_len: int, out_len: int, **kwargs: object) -> torch.Tensor:
    """The input index F.interpolate(mode='nearest') reads for each output index, asked of PyTorch itself."""
    index = torch.arange(in_len, dtype=torch.float64).view(1, 1, in_len, 1)
    if "scale_factor" in kwargs:
        kwargs = {"scale_factor": (kwargs["scale_factor"], 1.0)}
    else:
        kwargs = {"size": (out_len, 1)}
    return F.interpolate(index, mode="nearest", **kwargs).view(-1).long()


@pytest.mark.parametrize(
    ("in_hw", "request_", "out_hw"),
    [
        ((13, 13), {"size": (25, 25)}, (25, 25)),
        ((15, 17), {"size": (45, 51)}, (45, 51)),
        ((15, 17), {"scale_factor": 3.0}, (45, 51)),
        ((13, 13), {"scale_factor": 1.5}, (19, 19)),
    ],
)
def test_pack_any_size_takes_each_pixel_from_the_nearest_rules_input_cell(in_hw, request_, out_hw) -> None:
    torch.manual_seed(0)
    up = CARAFEPack(8, 2).double()
    with torch.no_grad():
        up.content_encoder.weight.normal_(std=0.3)
    x = torch.randn(1, 8, *in_hw, dtype=torch.float64)
    native = up(x)
    assert up(x, **request_).shape == (1, 8, *out_hw)
    for axis in (0, 1):  # resize one axis, keep the other native, so rows compare whole
        in_len, out_len = in_hw[axis], out_hw[axis]
        if "size" in request_:
            size = [2 * n for n in in_hw]
            size[axis] = out_len
            fitted, source = up(x, size=tuple(size)), _nearest_source(in_len, out_len)
        else:
            factor = [2.0, 2.0]
            factor[axis] = request_["scale_factor"]
            fitted = up(x, scale_factor=tuple(factor))
            source = _nearest_source(in_len, out_len, scale_factor=request_["scale_factor"])
        for o in range(out_len):
            here = fitted.select(2 + axis, o)
            cell = native.narrow(2 + axis, 2 * source[o].item(), 2)
            assert any(torch.equal(here, cell.select(2 + axis, i)) for i in range(2)), (axis, o)


def test_pack_defaults_native_size_and_errors() -> None:
    x = torch.randn(1, 8, 13, 13)
    up = CARAFEPack(8, 2)
    assert torch.equal(up(x, size=(26, 26)), up(x)) and torch.equal(up(x, scale_factor=2), up(x))
    assert CARAFEPack(8, 2, size=(25, 27))(x).shape == (1, 8, 25, 27)
    assert CARAFEPack(8, 2, output_scale_factor=1.5)(x).shape == (1, 8, 19, 19)
    assert CARAFEPack(8, 2, size=(25, 27))(x, size=(30, 30)).shape == (1, 8, 30, 30)
    with pytest.raises(ValueError, match="not both"):
        up(x, size=(25, 25), scale_factor=2)
    with pytest.raises(ValueError, match="up_group=3"):
        CARAFEPack(8, 2, up_group=3)
    with pytest.raises(ValueError, match="integer >= 2"):
        CARAFEPack(8, 1)
