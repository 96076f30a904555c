"""FreqFusion: the authors' reference data (both cases), the upsampler view, sizes, training, state, errors."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.freqfusion import (
    FreqFusion,
    LocalSimGuidedSampler,
    hamming2d,
    local_cosine_similarity,
    normalize_kernels,
)

CASES = ("default", "feature_resample")


def _case(name: str) -> reference.Reference:
    return reference.Reference("freqfusion", "." if name == "default" else name)


def _fuse(ff: FreqFusion, inputs: Mapping[str, torch.Tensor], use_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The authors' forward (hr_feat first); their return order: mask_lr, hr_feat (hr_out), lr_feat (lr_up)."""
    outputs = ff.fuse(inputs["hr_feat"], inputs["lr_feat"], use_checkpoint=use_checkpoint)
    return dict(zip(("output.mask_lr", "output.hr_feat", "output.lr_feat"), outputs))


@pytest.mark.parametrize("device", reference.DEVICES)
@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize(
    ("dtype", "use_checkpoint"),
    [(torch.float64, False), (torch.float64, True), (torch.float32, False)],
    ids=["float64", "float64-checkpoint", "float32"],
)
def test_reference_outputs_input_and_parameter_gradients(
    case_name: str, dtype: torch.dtype, use_checkpoint: bool, device: str
) -> None:
    ref = _case(case_name)
    forward = partial(_fuse, use_checkpoint=use_checkpoint)
    ref.assert_matches(ref.run(ref.module(FreqFusion, dtype), forward, dtype, device), dtype)


@pytest.mark.parametrize("device", reference.DEVICES)
@pytest.mark.parametrize("case_name", CASES)
def test_upsampler_view_is_the_reference_lr_up(case_name: str, device: str) -> None:
    """forward(x=lr_feat, guide=hr_feat) returns the authors' third output, lr_feat upsampled."""
    ref = _case(case_name)
    inputs = ref.inputs(torch.float64, device)
    out = ref.module(FreqFusion, torch.float64).to(device)(inputs["lr_feat"], inputs["hr_feat"])
    torch.testing.assert_close(out.detach().cpu(), ref("output.lr_feat.bin", torch.float64), atol=1e-5, rtol=1e-5)


def test_parameter_counts_at_256_are_the_readme_numbers() -> None:
    assert sum(p.numel() for p in FreqFusion(256, 256).parameters()) == 52_514
    assert sum(p.numel() for p in FreqFusion(256, 256, feature_resample=True).parameters()) == 104_690
    for case_name in CASES:
        ref = _case(case_name)
        assert sum(p.numel() for p in FreqFusion(**ref.args).parameters()) == ref.meta["num_params"]
        args = {**ref.args, "hr_channels": 256, "lr_channels": 256}
        assert sum(p.numel() for p in FreqFusion(**args).parameters()) == ref.meta["num_params_at_C256"]


@pytest.mark.parametrize("case_name", CASES)
def test_state_dict_names_and_fixed_buffers_are_the_authors(case_name: str) -> None:
    ref = _case(case_name)
    fresh = FreqFusion(**ref.args).state_dict()
    assert set(fresh) == ref.names("state_dict")
    for buffer in ("hamming_lowpass", "hamming_highpass", "dysampler.init_pos"):
        if buffer in fresh:  # the authors' numpy Hamming windows and sub-pixel grid, bit for bit
            assert torch.equal(fresh[buffer], ref(f"state_dict/{buffer}.bin")), buffer


def test_authors_initialisation() -> None:
    torch.manual_seed(0)
    ff = FreqFusion(64, 64, feature_resample=True)
    assert ff.content_encoder.weight.std().item() < 0.002 and ff.content_encoder2.weight.std().item() < 0.002
    bound = (6 / (64 + 64)) ** 0.5  # Xavier-uniform of the 1x1 compressors
    assert 0.9 * bound < ff.hr_channel_compressor.weight.abs().max().item() <= bound
    for conv in (ff.dysampler.offset, ff.dysampler.direct_scale):  # re-initialised by FreqFusion's init_weights
        assert conv.weight.std().item() > 0.01 and torch.equal(conv.bias, torch.zeros_like(conv.bias))


def test_kernel_normaliser_and_similarity_by_hand() -> None:
    window = torch.tensor([0.08, 1.0, 0.08])
    torch.testing.assert_close(hamming2d(3, 3), torch.outer(window, window))
    mask = torch.randn(2, 18, 3, 4)
    kernels = normalize_kernels(mask, 3, hamming2d(3, 3))
    soft = mask.view(2, 2, 9, 3, 4).softmax(2) * torch.outer(window, window).reshape(1, 1, 9, 1, 1)
    torch.testing.assert_close(kernels, (soft / soft.sum(2, keepdim=True)).view(2, 18, 3, 4))
    x = torch.randn(1, 5, 6, 7)
    sims = local_cosine_similarity(x)
    for t, (dy, dx) in enumerate([(-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2)]):
        for i, j in ((3, 3), (0, 0), (5, 6), (1, 4)):
            ni, nj = i + dy, j + dx
            inside = 0 <= ni < 6 and 0 <= nj < 7
            a, b = x[0, :, i, j], x[0, :, ni, nj] if inside else torch.zeros(5)
            expected = (a @ b) / (a.norm() * b.norm()) if inside else torch.tensor(0.0)
            torch.testing.assert_close(sims[0, t, i, j], expected)


@pytest.mark.parametrize("feature_resample", [False, True])
@pytest.mark.parametrize("device", reference.DEVICES)
def test_odd_sizes_and_non_integer_factors(feature_resample: bool, device: str) -> None:
    build = partial(FreqFusion, 8, 16, feature_resample=feature_resample)
    reference.assert_any_output_size(build, 16, 8, "output_scale_factor", device)


@pytest.mark.parametrize("flags", [{}, *reference.FREQFUSION_FLAGS])
def test_a_training_step_gives_every_parameter_a_nonzero_gradient(flags: dict) -> None:
    torch.manual_seed(0)
    ff = FreqFusion(8, 8, compressed_channels=16, **flags).train()
    x, guide = torch.randn(2, 8, 6, 5), torch.randn(2, 8, 12, 10)
    optimizer = torch.optim.SGD(ff.parameters(), lr=0.01)
    _, hr_out, lr_up = ff.fuse(guide, x)
    (hr_out + lr_up).square().mean().backward()
    for name, p in ff.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.step()
    ff.zero_grad()
    ff(x, guide).square().mean().backward()  # the upsampler view: every parameter learns through lr_up too
    for name, p in ff.named_parameters():
        boosted = flags.get("semi_conv", True) and flags.get("comp_feat_upsample", True)
        if not boosted and name.startswith("content_encoder2"):
            continue  # without the guide's boost the high-pass encoder feeds only hr_out, which the view skips
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case_name", CASES)
def test_state_dict_pickle_and_deepcopy_round_trips(case_name: str) -> None:
    ref = _case(case_name)
    x, guide = ref("input.lr_feat.bin"), ref("input.hr_feat.bin")
    fresh = FreqFusion(**ref.args)
    reference.assert_round_trips(ref.module(FreqFusion), fresh, lambda ff: ff(x, guide))
    reference.assert_round_trips(ref.module(FreqFusion), fresh, lambda ff: torch.cat(ff.fuse(guide, x), dim=1))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    ff = FreqFusion(8, 16)
    x, guide = torch.randn(2, 16, 4, 4), torch.randn(2, 8, 8, 8)
    reference.assert_guided_input_errors(ff, x, guide)
    with pytest.raises(ValueError, match="scale_factor must be a finite number"):
        ff(x, guide, scale_factor=-1)
    with pytest.raises(ValueError, match="hr_feat must be exactly twice"):
        ff.fuse(torch.randn(2, 8, 7, 8), x)
    with pytest.raises(ValueError, match="lr_feat has 8 channels .* lr_channels=16.*hr_feat first"):
        ff.fuse(x, guide)  # the authors' order is (hr_feat, lr_feat)
    with pytest.raises(ValueError, match="works only with 1"):
        FreqFusion(8, 8, scale_factor=2)
    with pytest.raises(ValueError, match="must be odd"):
        FreqFusion(8, 8, lowpass_kernel=4)
    with pytest.raises(ValueError, match="needs use_high_pass=True"):
        FreqFusion(8, 8, use_high_pass=False)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        FreqFusion(8, 8, size=4, output_scale_factor=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        LocalSimGuidedSampler(12)


@pytest.mark.parametrize("feature_resample", [False, True])
def test_no_tensor_much_larger_than_the_output_in_forward_and_backward(feature_resample: bool) -> None:
    ff = FreqFusion(64, 64, feature_resample=feature_resample).train()
    x = torch.randn(1, 64, 16, 16, requires_grad=True)
    guide = torch.randn(1, 64, 32, 32, requires_grad=True)
    with reference.LargestTensor() as probe:
        _, hr_out, lr_up = ff.fuse(guide, x)
        (hr_out + lr_up).square().sum().backward()
    # the largest are zero-padded copies of 64-channel maps (CARAFE's r=1 padding: 64x34x34; the similarity's
    # dilation-2 padding: 64x36x36); an unfold formulation would make 9x or 25x the output
    assert probe.largest <= 1.3 * lr_up.numel()


def test_guide_is_resized_bilinearly_only_when_it_differs() -> None:
    ff = FreqFusion(4, 4).eval()
    x, guide = torch.randn(1, 4, 13, 13), torch.randn(1, 4, 25, 25)
    resized = F.interpolate(guide, size=(26, 26), mode="bilinear", align_corners=False)
    assert torch.equal(ff(x, guide), ff(x, resized))
