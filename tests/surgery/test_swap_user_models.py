"""swap_upsamplers on user-style models: every way people write upsampling, and every policy option."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from swap_checks import check_swap, dysample_parameters
from torch.nn.functional import interpolate as resize

from dysample_swap.surgery.swap import find_upsamplers, swap_report, swap_upsamplers
from dysample_swap.upsamplers.dysample.module import DySample

pytestmark = pytest.mark.filterwarnings("ignore:`nn.functional.upsample.* is deprecated:UserWarning")


def conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Encoder(nn.Module):
    """Three levels: 16 ch at 1/1, 32 at 1/2, 64 at 1/4."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = conv(3, 16), conv(16, 32), conv(32, 64)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.c1(x)
        f2 = self.c2(F.max_pool2d(f1, 2))
        f3 = self.c3(F.max_pool2d(f2, 2))
        return [f1, f2, f3]


class EveryFunctionalSpelling(nn.Module):
    """F.interpolate positional/keyword, torch.nn.functional, an alias, F.upsample*, int/float/tuple scale."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.mix = nn.ModuleList([conv(64, 64) for _ in range(7)])
        self.head = nn.Conv2d(64, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.encoder(x)[2]  # 1/4 resolution
        y = F.interpolate(f3, None, 2, "nearest")  # positional, int scale
        y = self.mix[0](y)
        y = torch.nn.functional.interpolate(y, scale_factor=0.5, mode="bilinear")  # downsample: skipped
        y = resize(y, scale_factor=(2.0, 2.0), mode="bilinear", align_corners=True)  # alias, tuple
        y = self.mix[1](y)
        y = F.upsample(y, scale_factor=2.0)  # deprecated spelling
        y = self.mix[2](F.max_pool2d(y, 4))
        y = F.upsample_bilinear(y, scale_factor=2)  # align_corners=True
        y = self.mix[3](y)
        y = F.upsample_nearest(y, scale_factor=2)
        return self.head(self.mix[4](y))


class DynamicSizesAndSharedUpsample(nn.Module):
    """size from another tensor's shape, one nn.Upsample used at two channel counts, int size."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.lat = conv(32, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2, f3 = self.encoder(x)
        a = self.up(f3)[..., : f2.shape[-2], : f2.shape[-1]]  # 64 channels
        b = self.lat(f2 + a[:, :32])
        b = self.up(b)[..., : f1.shape[-2], : f1.shape[-1]]  # 16 channels: a second DySample
        c = F.interpolate(b, size=f1.shape[-2:], mode="nearest")  # same size: skipped
        d = F.interpolate(F.avg_pool2d(c, 2), size=x.shape[-1], mode="nearest")  # one int as size
        return self.head(d + c[..., : d.shape[-2], : d.shape[-1]])


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A helper function called from a forward: fx traces through it."""
    return F.interpolate(x, size=y.shape[-2:], mode="nearest") + y


class PyramidLoop(nn.Module):
    """One source line executed once per pyramid level, through a helper function."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.lateral = nn.ModuleList([nn.Conv2d(c, 32, 1) for c in (16, 32, 64)])
        self.head = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [lat(f) for lat, f in zip(self.lateral, self.encoder(x))]
        top = feats[-1]
        for level in reversed(feats[:-1]):
            top = upsample_add(top, level)
        return self.head(top)


class TakesADict(nn.Module):
    """A decoder whose forward takes a dict (fx needs concrete arguments for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(64, 32, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        top = self.reduce(feats["c3"])
        return F.interpolate(top, size=feats["c2"].shape[-2:], mode="bilinear") + feats["c2"]


class DictDecoderModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = TakesADict()
        self.head = nn.Sequential(nn.Conv2d(32, 2, 1), nn.Upsample(scale_factor=2, mode="bilinear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f2, f3 = self.encoder(x)
        return self.head(self.decoder({"c2": f2, "c3": f3}))


class ControlFlowOnShapes(nn.Module):
    """fx cannot trace this forward (Python branch on a shape): the eager fallback takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.post = conv(64, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.encoder(x)[2]
        if f3.shape[-1] > 1:
            f3 = F.interpolate(f3, scale_factor=2.0, mode="bilinear", align_corners=True)
        y = F.interpolate(self.post(f3), scale_factor=2.0, mode="nearest")
        return self.head(y)


class FallbackWithSequentialChild(nn.Module):
    """An eager-fallback owner whose Sequential child runs an nn.Upsample of its own (skipped):
    the fallback must count only the owner's calls, not the child's."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.side = nn.Sequential(nn.Conv2d(64, 64, 1), nn.Upsample(scale_factor=0.5))
        self.head = nn.Conv2d(64, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.encoder(x)[2]
        if f3.shape[-1] > 1:
            f3 = F.interpolate(f3, scale_factor=2.0, mode="nearest")
        return self.head(F.interpolate(self.side(f3), scale_factor=4.0, mode="bilinear"))


class SkipReasons(nn.Module):
    """Input resize, pooled broadcast, bicubic, antialias, 5-D, 3-D, final logits."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv(3, 16)
        self.ctx = nn.Conv2d(16, 16, 1)
        self.volume = nn.Conv3d(16, 16, 1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear")  # before any learned layer
        f = F.max_pool2d(self.stem(x), 2)
        ctx = self.ctx(F.adaptive_avg_pool2d(f, 1))
        f = f + F.interpolate(ctx, size=f.shape[-2:], mode="bilinear")  # 1x1 broadcast
        f = F.interpolate(f, scale_factor=2.0, mode="bicubic")
        f = F.interpolate(F.avg_pool2d(f, 2), scale_factor=2.0, mode="bilinear", antialias=True)
        v = self.volume(f.unsqueeze(2))
        f = F.interpolate(v, scale_factor=(1.0, 1.0, 1.0), mode="nearest").squeeze(2)  # 5-D
        row = F.interpolate(f.mean(-2), scale_factor=2.0, mode="linear")  # 3-D
        f = F.max_pool2d(f, 2) + row.mean(-1, keepdim=True).unsqueeze(-1)[..., : f.shape[-2] // 2, :1]
        return F.interpolate(self.head(f), scale_factor=2.0, mode="bilinear")  # final logits


class SharedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = conv(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=2.0, mode="nearest")


class SharedOwner(nn.Module):
    """The same block instance runs twice per forward: both executions share one DySample."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv(3, 16)
        self.block = SharedBlock()
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(self.stem(x), 4)
        return self.head(F.max_pool2d(self.block(self.block(y)), 2))


class SequentialDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv(3, 8),
            nn.MaxPool2d(4),
            conv(8, 16),
            nn.UpsamplingBilinear2d(scale_factor=2),
            conv(16, 16),
            nn.UpsamplingNearest2d(scale_factor=2),
            nn.Conv2d(16, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UpThenScale(nn.Upsample):
    """An nn.Upsample subclass with its own forward: its call is rewritten inside it, keeping the * 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


class UpsampleSubclassModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv(3, 8), nn.MaxPool2d(2), UpThenScale(scale_factor=2, mode="nearest"), nn.Conv2d(8, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


X = torch.rand(1, 3, 32, 32)
ODD = torch.rand(1, 3, 36, 44)
TRAIN = (torch.rand(2, 3, 64, 64),)

CASES = [
    (EveryFunctionalSpelling, X, ODD, 5, 1, 0),
    (DynamicSizesAndSharedUpsample, X, torch.rand(1, 3, 37, 37), 3, 1, 0),
    (PyramidLoop, X, torch.rand(1, 3, 37, 45), 2, 0, 0),
    (DictDecoderModel, X, torch.rand(1, 3, 36, 44), 1, 1, 0),
    (ControlFlowOnShapes, X, ODD, 2, 0, 2),
    (FallbackWithSequentialChild, X, ODD, 2, 1, 2),
    (SharedOwner, X, ODD, 2, 0, 0),
    (SequentialDecoder, X, ODD, 2, 0, 0),
    (UpsampleSubclassModel, X, ODD, 1, 0, 0),
]


@pytest.mark.parametrize(
    ("cls", "x", "other", "swapped", "skipped", "fallback"), CASES, ids=[c[0].__name__ for c in CASES]
)
def test_user_model(
    cls: type[nn.Module], x: torch.Tensor, other: torch.Tensor, swapped: int, skipped: int, fallback: int
) -> None:
    model, report = check_swap(
        cls, (x,), other_inputs=(other,), train_inputs=TRAIN, swapped=swapped, skipped=skipped, fallback=fallback
    )
    if fallback == 0:  # everything went through fx: the whole model still traces
        traced = torch.fx.symbolic_trace(model)
        with torch.no_grad():
            assert torch.allclose(traced(other), model(other), atol=1e-5)


def test_every_spelling_is_found_with_its_api_and_arguments() -> None:
    sites = find_upsamplers(EveryFunctionalSpelling(), X)
    assert [s.function for s in sites] == [
        "F.interpolate",
        "F.interpolate",
        "F.interpolate",
        "F.upsample",
        "F.upsample_bilinear",
        "F.upsample_nearest",
    ]
    assert [(s.mode, s.align_corners) for s in sites] == [
        ("nearest", None),
        ("bilinear", None),
        ("bilinear", True),
        ("nearest", None),
        ("bilinear", True),
        ("nearest", None),
    ]
    assert [s.scale for s in sites] == [(2.0, 2.0), (0.5, 0.5), (2.0, 2.0), (2.0, 2.0), (2.0, 2.0), (2.0, 2.0)]
    assert sites[1].reason == "downsamples 16x16->8x8"
    assert all(s.kind == "function" and s.path == "<root>" for s in sites)
    assert all(s.source.startswith("tests/surgery/test_swap_user_models.py:") for s in sites)


def test_one_upsample_module_at_two_channel_counts_gets_two_dysamples() -> None:
    model = swap_upsamplers(DynamicSizesAndSharedUpsample(), "dysample", X, verbose=False)
    up_sites = [s for s in swap_report(model).sites if s.path == "up"]
    assert [(s.kind, s.in_channels, s.action) for s in up_sites] == [("module", 64, "swap"), ("module", 16, "swap")]
    assert [s.replacement for s in up_sites] == ["dysample_0", "dysample_1"]  # shared: not in place
    assert [model.get_submodule(s.replacement).in_channels for s in up_sites] == [64, 16]
    int_size = [s for s in swap_report(model).sites if "size_int" in s.flags]
    assert [(s.size, s.action) for s in int_size] == [((32, 32), "swap")]


def test_loop_and_helper_function_get_one_dysample_per_executed_call() -> None:
    sites = find_upsamplers(PyramidLoop(), X)
    assert [(s.path, s.helper, s.order, s.in_channels) for s in sites] == [
        ("<root>", "upsample_add", 0, 32),
        ("<root>", "upsample_add", 1, 32),
    ]
    assert sites[0].source == sites[1].source
    model = swap_upsamplers(PyramidLoop(), "dysample", X, verbose=False)
    assert len([m for m in model.modules() if isinstance(m, DySample)]) == 2


def test_skip_reasons() -> None:
    with pytest.warns(UserWarning, match="no upsampling site is eligible"):
        sites = find_upsamplers(SkipReasons(), X)
    reasons = [s.reason for s in sites]
    assert reasons == [
        "resizes the network input (32x32 -> 64x64) before any learned layer",
        "1x1 -> 32x32 broadcast of pooled context",
        "bicubic not supported (DySample reproduces nearest and bilinear)",
        "antialias=True is not reproduced by DySample",
        "5-D input (DySample needs N, C, H, W)",
        "3-D input (DySample needs N, C, H, W)",
        "final logits of the network (pass swap_final=True to swap)",
    ]
    assert "pooled" in sites[1].flags and "final" in sites[-1].flags


def test_eager_fallback_is_marked_and_survives_deepcopy() -> None:
    model = swap_upsamplers(ControlFlowOnShapes(), "dysample", X, verbose=False)
    report = swap_report(model)
    assert [s.method for s in report.swapped] == ["eager fallback", "eager fallback"]
    assert (
        report.table().count(
            "[eager fallback: fx failed: TraceError: symbolically traced variables "
            "cannot be used as inputs to control flow]"
        )
        == 2
    )
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.dysample_0.offset.bias.fill_(0.3)  # only the clone's DySample moves
        assert not torch.allclose(clone(X), model(X))
        model.dysample_0.offset.bias.fill_(0.3)
        assert torch.allclose(clone(X), model(X), atol=1e-6)


def test_shared_owner_shares_one_dysample() -> None:
    model = swap_upsamplers(SharedOwner(), "dysample", X, verbose=False)
    report = swap_report(model)
    assert [(s.owner, s.owner_call, s.replacement) for s in report.swapped] == [
        ("block", 0, "dysample_0"),
        ("block", 1, "dysample_0"),
    ]


def test_policy_include_exclude_globs_and_predicates() -> None:
    def swapped(**policy: object) -> list[str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [s.path for s in find_upsamplers(SequentialDecoder(), X, **policy) if s.action == "swap"]

    assert swapped() == ["net.3", "net.5"]
    assert swapped(include="net.3") == ["net.3"]
    assert swapped(include=["net"]) == ["net.3", "net.5"]  # a path selects its subtree
    assert swapped(exclude="net.[35]") == []
    assert swapped(include=lambda s: s.mode == "nearest") == ["net.5"]
    skipped = {s.path: s.reason for s in find_upsamplers(SequentialDecoder(), X, exclude="*.5")}
    assert skipped["net.5"] == "excluded by exclude="


def test_strict_raises_and_lenient_warns() -> None:
    with pytest.raises(ValueError, match="no upsampling site is eligible"):
        swap_upsamplers(SkipReasons(), example_inputs=X, strict=True, verbose=False)
    with pytest.raises(ValueError, match="requested by include= but is skipped: downsamples"):
        swap_upsamplers(
            EveryFunctionalSpelling(), example_inputs=X, include=lambda s: s.order == 1, strict=True, verbose=False
        )
    with pytest.raises(
        ValueError, match=r"include='decoder\.\*' selects none of the sites \(their paths: net\.3, net\.5\)"
    ):
        find_upsamplers(SequentialDecoder(), X, include="decoder.*", strict=True)
    with pytest.warns(UserWarning, match="no upsampling site is eligible"):
        model = swap_upsamplers(SkipReasons(), example_inputs=X, verbose=False)
    assert not dysample_parameters(model)


def test_swap_final_and_groups_fallback() -> None:
    with pytest.warns(UserWarning, match="no upsampling site is eligible"):
        final = find_upsamplers(SkipReasons(), X, swap_final=True, groups_fallback=False)[-1]
    assert final.reason == (
        "2 channels are not divisible by groups=4 of dysample+; groups_fallback=True (the default) would use groups=2"
    )
    final = find_upsamplers(SkipReasons(), X, swap_final=True)[-1]
    assert (final.action, final.groups, final.groups_note) == ("swap", 2, "groups 4 -> 2 (2 channels)")
    assert final.reason.endswith(", groups 4 -> 2 (2 channels)")


def test_paper_init_anchors_bilinear_with_random_offsets() -> None:
    torch.manual_seed(0)
    model = swap_upsamplers(SequentialDecoder(), "dysample", X, init="paper", verbose=False)
    modules = [m for m in model.modules() if isinstance(m, DySample)]
    assert [m.anchor for m in modules] == ["bilinear", "bilinear"]
    assert all(m.offset.weight.abs().max() > 0 for m in modules)
    matched = swap_upsamplers(SequentialDecoder(), "dysample", X, verbose=False)
    assert [m.anchor for m in matched.modules() if isinstance(m, DySample)] == ["bilinear_align_corners", "nearest"]


def test_variant_and_option_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"unknown upsampler 'dysample\+\+'"):
        swap_upsamplers(SequentialDecoder(), "dysample++", X)
    with pytest.raises(TypeError, match="unknown policy option.*'swap_finals'"):
        find_upsamplers(SequentialDecoder(), X, swap_finals=True)
    with pytest.raises(ValueError, match="init='bilinear' is not one of"):
        find_upsamplers(SequentialDecoder(), X, init="bilinear")


def test_default_example_input_and_clear_error_without_one() -> None:
    sites = find_upsamplers(SequentialDecoder())
    assert sites[0].input_shape == (1, 16, 32, 32)  # 1x3x128x128 after the /4 pooling

    class NoConv(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, scale_factor=2.0)

    with pytest.raises(ValueError, match="pass example_inputs="):
        find_upsamplers(NoConv())


def test_swapped_sequential_keeps_class_and_train_eval() -> None:
    model = swap_upsamplers(SequentialDecoder().eval(), "dysample+", X, verbose=False)
    assert not any(m.training for m in model.modules())  # the new modules follow their owner's mode
    assert isinstance(model.net, nn.Sequential) and len(model.net) == 7  # Upsamples replaced in place
    assert isinstance(model.net[3], DySample) and isinstance(model.net[5], DySample)
    assert {"net.3.offset.weight", "net.5.scope.weight"} <= set(model.state_dict())
    assert [s.replacement for s in swap_report(model).swapped] == ["3", "5"]
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
