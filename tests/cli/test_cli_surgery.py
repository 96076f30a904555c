"""The ``inspect`` / ``swap`` sub-commands, model specs, and save/load of swapped models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from dysample_swap.cli import main
from dysample_swap.surgery.model_spec import UntrustedSpecError, build_model, parse_spec
from dysample_swap.surgery.persist import load_swapped
from dysample_swap.upsamplers.dysample.module import DySample

FPN = "smp:FPN:encoder_name=resnet18,encoder_depth=3,decoder_segmentation_channels=32"


def tiny_model(channels: int = 8) -> nn.Module:
    """Used as a ``module:function`` model spec below."""
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(channels, 2, 1))


def test_inspect_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", FPN]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == [
        "path",
        "kind",
        "mode",
        "channels",
        "in",
        "->",
        "out",
        "scale/size",
        "guide",
        "action",
        "how",
        "reason",
    ]
    assert any(line.startswith("decoder.p3 ") and " add decoder.p3.skip_conv (256) " in line for line in lines)
    assert any(line.startswith("decoder.p3 ") and " swap " in line for line in lines)
    assert any(line.startswith("segmentation_head.1 ") and "final logits" in line for line in lines)
    assert "9 swapped, 1 skipped; variant dysample+ adds 61,728 parameters" in lines
    costs = {line.split()[0]: line.split()[1:] for line in lines[-8:]}
    assert list(costs) == [
        "dysample",
        "dysample+",
        "dysample-s",
        "dysample-s+",
        "carafe",
        "deconv",
        "pixelshuffle",
        "bilinear",
    ]
    assert costs["dysample+"][0] == "61,728" and costs["bilinear"][0] == "0"  # the same count as the plan


def test_inspect_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "inspect",
                FPN,
                "--variant",
                "dysample-s",
                "--input-shape",
                "1x3x96x96",
                "--exclude",
                "decoder.seg_blocks.*",
                "--swap-final",
                "--groups-fallback",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "96x96" in out and out.count("excluded by exclude=") == 6
    assert "in_channels % scale**2" in out or "pixel" in out  # the 1-class x4 head cannot take PL
    assert any(line.startswith("3 swapped, 7 skipped; variant dysample-s adds ") for line in out.splitlines())


def test_inspect_a_guided_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", FPN, "--variant", "fade"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("decoder.p3 ") and " add decoder.p3.skip_conv (256) " in line and " swap " in line
        for line in lines
    )
    assert any(line.startswith("3 swapped, 7 skipped; variant fade adds 141,771 parameters") for line in lines)
    assert sum("no guide: the result is not added" in line for line in lines) == 6  # the seg blocks: no fusion


def test_swap_writes_a_file_that_load_swapped_rebuilds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fpn.pt"
    assert main(["swap", FPN, "--variant", "dysample", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    payload = torch.load(out, weights_only=True)
    assert payload["recipe"]["model"] == FPN and payload["recipe"]["variant"] == "dysample"
    assert payload["recipe"]["inputs"] == [{"tensor": [1, 3, 128, 128]}]
    model = load_swapped(out)
    assert sum(isinstance(m, DySample) for m in model.modules()) == 9
    for key, value in model.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key]), key
    x = torch.rand(1, 3, 64, 96)
    assert model(x).shape == build_model(FPN)(x).shape


def test_swap_detector_spec_with_image_input(tmp_path: Path) -> None:
    out = tmp_path / "det.pt"
    spec = "torchvision:fcos_resnet50_fpn:min_size=96,max_size=128"
    assert main(["swap", spec, "--input-shape", "3x96x128", "--out", str(out)]) == 0
    model = load_swapped(out)
    assert sum(isinstance(m, DySample) for m in model.modules()) == 2
    assert torch.load(out, weights_only=True)["recipe"]["inputs"] == [{"images": [[3, 96, 128]]}]


def test_module_function_spec(tmp_path: Path) -> None:
    out = tmp_path / "tiny.pt"
    assert main(["swap", "test_cli_surgery:tiny_model:channels=12", "--out", str(out)]) == 0
    with pytest.raises(UntrustedSpecError, match=r"'test_cli_surgery:tiny_model:channels=12'.*trust_spec=True"):
        load_swapped(out)  # a file's spec that names code is built only when the caller trusts it
    for model in (load_swapped(out, trust_spec=True), load_swapped(out, model=tiny_model(channels=12))):
        assert isinstance(model[0], nn.Conv2d) and model[0].out_channels == 12
        assert isinstance(model[1], DySample)


def test_load_swapped_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        load_swapped(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable swapped-model file"):
        load_swapped(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a dysample_swap swapped-model file"):
        load_swapped(other)
    good = tmp_path / "good.pt"
    assert main(["swap", "test_cli_surgery:tiny_model", "--out", str(good)]) == 0
    payload = torch.load(good, weights_only=True)
    payload["recipe"]["variant"] = "dysample-s"  # other layout: the weights no longer fit
    torch.save(payload, good)
    with pytest.raises(ValueError, match="do not fit the model rebuilt from its recipe"):
        load_swapped(good, trust_spec=True)  # PL: other weight shapes


def test_bad_specs_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "smp:FNP"]) == 2
    assert "smp has no architecture 'FNP'. Did you mean FPN" in capsys.readouterr().err
    assert main(["inspect", "torchvision:fasterrcnn"]) == 2
    assert "torchvision has no model 'fasterrcnn'" in capsys.readouterr().err
    assert main(["inspect", "no_such_module_xyz:build"]) == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", FPN, "--input-shape", "3x3"])


def test_parse_and_build_specs() -> None:
    assert parse_spec("torchvision:fcos_resnet50_fpn:min_size=320,box_score_thresh=0.1") == (
        "torchvision",
        "fcos_resnet50_fpn",
        {"min_size": 320, "box_score_thresh": 0.1},
    )
    with pytest.raises(ValueError, match="is not SOURCE:NAME"):
        parse_spec("FPN")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_spec("smp:FPN:resnet34")
    assert type(build_model("timm:resnet18:num_classes=3")).__name__ == "ResNet"
