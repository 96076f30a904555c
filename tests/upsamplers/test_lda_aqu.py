"""LDA-AQU: the authors' reference data, the attention against an independent formulation, sizes, training, state."""

from __future__ import annotations

from functools import partial

import pytest
import reference
import torch
import torch.nn.functional as F

from dysample_swap.upsamplers.lda_aqu import LDAAQU, local_deformable_attention

REF = reference.Reference("lda_aqu")
META = REF.meta


@pytest.mark.parametrize("device", reference.DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_output_input_and_parameter_gradients(dtype: torch.dtype, device: str) -> None:
    reference.assert_reproduced("lda_aqu", LDAAQU, reference.call("x"), dtype, device=device)


def test_parameter_count_at_256_is_the_readme_number() -> None:
    assert sum(p.numel() for p in LDAAQU(256).parameters()) == 39_410 == META["num_params_at_C256"]
    assert sum(p.numel() for p in LDAAQU(**META["config"]["args"]).parameters()) == META["num_params"]


def test_state_dict_names_and_initialisation_are_the_authors() -> None:
    torch.manual_seed(0)
    up = LDAAQU(32)
    assert set(up.state_dict()) == REF.names("state_dict")  # base_offset is not persistent
    grid = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]
    assert up.base_offset.flatten().tolist() == [float(v) for pair in grid for v in pair]
    last = up.conv_offset[3]
    assert not last.weight.any() and not last.bias.any()
    for norm in (up.layer_norm.norm, up.conv_offset[1].norm):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
    bound = (6 / (32 + 8)) ** 0.5  # Xavier-uniform of proj_q (32 -> 8, 1x1)
    assert 0.8 * bound < up.proj_q.weight.abs().max().item() <= bound
    table = up.relative_position_bias_table
    assert table.shape == (1, 1, 1, 9, 8) and 0.01 < table.std().item() < 0.04  # trunc_normal(std=0.02), cut at +-2


def _authors_style_attention(q, k, v, offset, groups, heads, bias):
    """An independent formulation, the authors' layout: all points in one (k*H, k*W) grid, one grid_sample each."""
    b, cq, h_out, w_out = q.shape
    points = offset.shape[1] // (2 * groups)
    ks = int(points**0.5)
    off = offset.reshape(b * groups, ks, ks, 2, h_out, w_out).permute(0, 1, 4, 2, 5, 3)  # b kh h kw w d
    rows = torch.arange(h_out, dtype=q.dtype, device=q.device).view(1, 1, h_out, 1, 1)
    cols = torch.arange(w_out, dtype=q.dtype, device=q.device).view(1, 1, 1, 1, w_out)
    gy = 2 * (off[..., 0] + rows) / (h_out - 1) - 1
    gx = 2 * (off[..., 1] + cols) / (w_out - 1) - 1
    grid = torch.stack((gx, gy), -1).reshape(b * groups, ks * h_out, ks * w_out, 2)

    def extract(feat):  # (b g) c (ks h) (ks w) -> b (h w) n (g c)
        out = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        c = out.shape[1]
        out = out.view(b, groups, c, ks, h_out, ks, w_out).permute(0, 4, 6, 3, 5, 1, 2)
        return out.reshape(b, h_out * w_out, points, groups * c)

    keys = extract(k.reshape(b * groups, -1, *k.shape[-2:]))
    values = extract(v.reshape(b * groups, -1, *v.shape[-2:]))
    keys = keys.view(b, h_out * w_out, points, heads, -1).permute(0, 3, 1, 2, 4)  # b nh n1 n c
    values = values.view(b, h_out * w_out, points, heads, -1).permute(0, 3, 1, 2, 4)
    queries = q.view(b, heads, -1, h_out * w_out).permute(0, 1, 3, 2).unsqueeze(3)  # b nh n1 1 c
    keys = keys + bias
    attn = ((queries * (cq // heads) ** -0.5) @ keys.transpose(-1, -2)).softmax(-1)
    out = (attn @ values).squeeze(3)  # b nh n1 c
    return out.permute(0, 1, 3, 2).reshape(b, -1, h_out, w_out)


@pytest.mark.parametrize("device", reference.DEVICES)
@pytest.mark.parametrize(("groups", "heads", "points"), [(2, 1, 9), (2, 2, 9), (1, 2, 25), (4, 1, 1)])
def test_attention_matches_the_authors_layout_with_gradients(groups: int, heads: int, points: int, device: str) -> None:
    g = torch.Generator().manual_seed(groups * 10 + heads)
    b, cq, c, h, w, h_out, w_out = 2, 8, 16, 4, 5, 8, 10
    tensors = [
        torch.randn(b, cq, h_out, w_out, generator=g, dtype=torch.float64),
        torch.randn(b, cq, h, w, generator=g, dtype=torch.float64),
        torch.randn(b, c, h, w, generator=g, dtype=torch.float64),
        3 * torch.randn(b, groups * points * 2, h_out, w_out, generator=g, dtype=torch.float64),
        torch.randn(1, heads, 1, points, cq // heads, generator=g, dtype=torch.float64),
    ]
    weight = torch.randn(b, c, h_out, w_out, generator=g, dtype=torch.float64).to(device)
    results = []
    for fn in ("ours", "authors"):
        leaves = [t.to(device).requires_grad_() for t in tensors]
        q, k, v, off, bias = leaves
        if fn == "ours":
            out = local_deformable_attention(q, k, v, off, groups=groups, num_heads=heads, key_bias=bias)
        else:
            out = _authors_style_attention(q, k, v, off, groups, heads, bias)
        grads = torch.autograd.grad((out * weight).sum(), leaves)
        results.append((out, *grads))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)


def test_attention_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    inputs = (
        torch.randn(1, 4, 4, 6, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 6, 2, 3, generator=g, dtype=torch.float64, requires_grad=True),
        torch.rand(1, 2 * 4 * 2, 4, 6, generator=g, dtype=torch.float64).mul(3).add(0.13).requires_grad_(),
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v, off: local_deformable_attention(q, k, v, off, groups=2, num_heads=2),
        inputs,
        fast_mode=True,
    )


@pytest.mark.parametrize("device", reference.DEVICES)
def test_odd_sizes_and_non_integer_factors(device: str) -> None:
    reference.assert_any_output_size(partial(LDAAQU, 16), 16, None, "output_scale_factor", device)


def test_module_default_size_and_other_ratios() -> None:
    assert LDAAQU(16, size=(25, 27))(torch.randn(1, 16, 13, 14)).shape == (1, 16, 25, 27)
    assert LDAAQU(16, scale_factor=4)(torch.randn(1, 16, 3, 5)).shape == (1, 16, 12, 20)
    assert LDAAQU(16, nh=2, rpb=False)(torch.randn(1, 16, 3, 5)).shape == (1, 16, 6, 10)


def test_training_gives_every_parameter_a_nonzero_gradient() -> None:
    """The authors zero the last offset conv, so the offset branch below it learns from the second step on."""
    torch.manual_seed(0)
    up = LDAAQU(16).train()
    x = torch.randn(2, 16, 6, 5)
    optimizer = torch.optim.SGD(up.parameters(), lr=0.1)
    up(x).square().mean().backward()
    blocked = {"conv_offset.0.weight", "conv_offset.1.norm.weight", "conv_offset.1.norm.bias"}
    for name, p in up.named_parameters():
        assert p.grad is not None
        assert (p.grad.abs().sum() == 0) == (name in blocked), name
    optimizer.step()
    optimizer.zero_grad()
    up(x).square().mean().backward()
    for name, p in up.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_state_dict_pickle_and_deepcopy_round_trips() -> None:
    x = REF("input.x.bin")
    reference.assert_round_trips(REF.module(LDAAQU), LDAAQU(**REF.args), lambda up: up(x))


def test_bad_inputs_raise_value_errors_naming_the_fix() -> None:
    up = LDAAQU(16)
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match="x must be a \\(B, 16, h, w\\) feature map"):
        up(x[0])
    with pytest.raises(ValueError, match="x has 8 channels.*LDAAQU\\(8\\)"):
        up(x[:, :8])
    with pytest.raises(ValueError, match="size must be whole numbers"):
        up(x, size=(7.5, 8))
    with pytest.raises(ValueError, match="multiple of reduction_factor \\* n_groups = 8"):
        LDAAQU(12)
    with pytest.raises(ValueError, match="whole number >= 2"):
        LDAAQU(16, scale_factor=1.5)
    with pytest.raises(ValueError, match="k_u must be odd"):
        LDAAQU(16, k_u=2)
    with pytest.raises(ValueError, match="default size or a default scale_factor"):
        LDAAQU(16, size=4, output_scale_factor=2)


def test_no_tensor_larger_than_the_output_in_forward_and_backward() -> None:
    """The authors' layout samples all 9 points at once: 9x the output (values) and 9/4x (keys)."""
    up = LDAAQU(64).train()
    x = torch.randn(1, 64, 16, 16, requires_grad=True)
    with reference.LargestTensor() as probe:
        out = up(x)
        out.square().sum().backward()
    assert probe.largest <= out.numel()
