"""DySample under autocast, torch.fx, torch.export, ONNX (onnxruntime) and torch.compile."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dysample_swap.upsamplers.dysample.sampling as sampling
from dysample_swap import DySample


class TwoStyleNet(nn.Module):
    """A conv, then an LP and a PL DySample, one at the default size and one at a run-time size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.lp = DySample(32, 2, "lp", 4, dyscope=True)
        self.pl = DySample(32, 2, "pl", 4, dyscope=True)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        odd = (2 * x.shape[-2] - 1, 2 * x.shape[-1] - 1)  # an FPN-style size taken from a tensor
        return self.lp(y)[..., 1:, 1:] + self.pl(y, size=odd)


def test_fx_symbolic_trace_reruns_exactly() -> None:
    net = TwoStyleNet().eval()
    traced = torch.fx.symbolic_trace(net)
    sampler_calls = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is sampling.dysample]
    assert len(sampler_calls) == 2  # the sampler is one leaf call per module
    for shape in ((1, 3, 13, 17), (2, 3, 20, 9)):
        x = torch.randn(*shape)
        assert torch.equal(traced(x), net(x))


def test_torch_export_with_dynamic_height_and_width() -> None:
    net = TwoStyleNet().eval()
    dims = {2: torch.export.Dim("h", min=4, max=256), 3: torch.export.Dim("w", min=4, max=256)}
    exported = torch.export.export(net, (torch.randn(1, 3, 12, 12),), dynamic_shapes=(dims,))
    x = torch.randn(1, 3, 21, 9)
    torch.testing.assert_close(exported.module()(x), net(x), rtol=1e-5, atol=1e-5)


def test_onnx_export_runs_in_onnxruntime_at_another_size(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    net = TwoStyleNet().eval()
    path = tmp_path / "dysample.onnx"
    dims = {2: torch.export.Dim("h", min=4, max=256), 3: torch.export.Dim("w", min=4, max=256)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 3, 12, 12),),
            str(path),
            input_names=["x"],
            dynamic_shapes=(dims,),
            dynamo=True,
            verbose=False,
        )
    session = ort.InferenceSession(str(path))
    for shape in ((1, 3, 12, 12), (1, 3, 23, 17)):  # the second size is not the export size
        x = torch.randn(*shape)
        (out,) = session.run(None, {"x": x.numpy()})
        expected = net(x).detach().numpy()
        assert out.shape == expected.shape
        assert abs(out - expected).max() < 1e-4


class SiteNet(nn.Module):
    """The three ways a swapped network calls DySample: with ``scale_factor=``, with a ``size`` taken from
    another tensor's shape (an FPN lateral), and as an ``nn.Upsample`` stand-in called as ``layer(x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.down = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.by_factor = DySample(32, 2, "lp", 4, dyscope=True)
        self.by_size = DySample(32, 2, "pl", 4, dyscope=True, anchor="nearest")
        self.as_upsample = DySample(32, 2, "lp", 4, scale_factor=2.0, anchor="bilinear_align_corners")
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        small = self.down(y)
        return self.by_factor(small, scale_factor=2.0), self.by_size(small, size=y.shape[-2:]), self.as_upsample(small)


@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_sites_called_with_scale_factor_size_and_as_upsample_run_at_another_size(
    tmp_path: Path, dynamo: bool
) -> None:
    """Issue 8: a size computed from scale_factor in Python was baked into the graph (Reshape failed in ORT)."""
    ort = pytest.importorskip("onnxruntime")
    net = SiteNet().eval()
    path = tmp_path / f"sites_{dynamo}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {
                0: torch.export.Dim("n", min=1, max=8),
                2: torch.export.Dim("h", min=4, max=256),
                3: torch.export.Dim("w", min=4, max=256),
            }
            torch.onnx.export(
                net,
                (torch.randn(2, 3, 24, 24),),
                str(path),
                input_names=["x"],
                dynamic_shapes=(dims,),
                dynamo=True,
                verbose=False,
            )
        else:
            torch.onnx.export(
                net,
                (torch.randn(2, 3, 24, 24),),
                str(path),
                input_names=["x"],
                dynamo=False,
                dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
            )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((2, 3, 24, 24), (4, 3, 20, 28), (1, 3, 17, 13)):  # the export size, then two others
        x = torch.randn(*shape)
        outputs = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            expected = net(x)
        for out, ref in zip(outputs, expected):
            assert out.shape == tuple(ref.shape)
            assert abs(out - ref.numpy()).max() <= 1e-4 * ref.abs().max().item()


@pytest.mark.slow
def test_torch_compile_both_styles_and_a_second_shape() -> None:
    net = TwoStyleNet().eval()
    compiled = torch.compile(net)
    for shape in ((1, 3, 12, 12), (1, 3, 17, 10)):
        x = torch.randn(*shape)
        torch.testing.assert_close(compiled(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("positions", ["grid", "exact"])
@pytest.mark.parametrize("style", ["lp", "pl"])
def test_autocast_bfloat16_keeps_coordinates_in_float32(
    style: str, positions: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = DySample(64, 2, style, 4, dyscope=True, positions=positions)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)  # offsets of a few tenths of a pixel
    x = torch.randn(2, 64, 24, 24, generator=generator)  # fixed: the bf16 error bound is checked, not sampled
    reference = module(x)

    coordinates = []
    if positions == "grid":
        grid_sample = F.grid_sample

        def recording_grid_sample(inp: torch.Tensor, grid: torch.Tensor, **kwargs: object) -> torch.Tensor:
            coordinates.append(grid.dtype)
            return grid_sample(inp, grid, **kwargs)

        monkeypatch.setattr(sampling.F, "grid_sample", recording_grid_sample)
    else:
        apply = sampling.SparseBilinear.apply

        def recording_apply(
            feats: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, pixels: int
        ) -> torch.Tensor:
            coordinates.append(weight.dtype)
            return apply(feats, index, weight, pixels)

        monkeypatch.setattr(sampling.SparseBilinear, "apply", recording_apply)
    native_sample = sampling.native_sample

    def recording_native_sample(inp: torch.Tensor, offset: torch.Tensor, *args: object) -> torch.Tensor:
        coordinates.append(offset.dtype)
        return native_sample(inp, offset, *args)

    monkeypatch.setattr(sampling, "native_sample", recording_native_sample)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert coordinates == [torch.float32]  # grid / bilinear weights (the coordinates) built in float32 under autocast
    assert out.dtype == torch.float32  # the sampling reads the float32 input (grid_sample's autocast rule)
    # only the bf16 offset convolution rounds: the error stays within bf16's epsilon (2**-7) of the output
    error = (out.float() - reference).abs().max().item()
    assert error <= 2**-7 * reference.abs().max().item()
    assert error > 0  # autocast really ran the convolution in bfloat16
