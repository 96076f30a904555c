"""`dysample-swap visualize` and the offsets behind it, against hand-set DySample weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from dysample_swap import DySample
from dysample_swap.cli import main
from dysample_swap.finetune.checkpoint import save_checkpoint
from dysample_swap.finetune.config import ConfigError, build_config
from dysample_swap.finetune.visualize import sampling_offsets, visualize_offsets
from dysample_swap.surgery.model_spec import UntrustedSpecError
from dysample_swap.upsamplers.dysample.sampling import POSITIONS

PNG = b"\x89PNG\r\n\x1a\n"


def _constant_offsets(module: DySample, dx: float, dy: float) -> DySample:
    """Zero offset weight, bias giving raw offset (dx, dy) for every output pixel and group."""
    with torch.no_grad():
        module.offset.weight.zero_()
        half = module.offset.bias.numel() // 2
        module.offset.bias[:half] = dx
        module.offset.bias[half:] = dy
    return module


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("variant", ["dysample", "dysample-s"])
def test_static_scope_offsets_are_a_quarter_of_the_raw_offset(variant: str, positions: str) -> None:
    up = _constant_offsets(
        DySample.from_variant(variant, in_channels=32, offset_init_std=0.0, positions=positions), 1.0, -2.0
    )
    anchor, disp, scope = sampling_offsets(up, torch.randn(1, 32, 6, 6))
    assert scope is None and disp.shape == (1, up.groups, 2, 12, 12)
    inner = disp[..., 2:-2, 2:-2]  # away from the border, where readings clamp
    assert torch.allclose(inner[:, :, 0], torch.full_like(inner[:, :, 0], 0.25), atol=1e-6)
    assert torch.allclose(inner[:, :, 1], torch.full_like(inner[:, :, 1], -0.5), atol=1e-6)
    # Bilinear anchors: output pixel j of a x2 upsampling reads input position (j + 0.5) / 2.
    assert anchor[0, 0, 5, 2:6].tolist() == pytest.approx([1.25, 1.75, 2.25, 2.75])
    assert anchor[0, 1, 2:6, 5].tolist() == pytest.approx([1.25, 1.75, 2.25, 2.75])


def test_dynamic_scope_is_half_sigmoid_of_the_scope_projection() -> None:
    up = _constant_offsets(DySample.from_variant("dysample+", in_channels=8, groups=2, offset_init_std=0.0), 0.4, 0.4)
    with torch.no_grad():  # scope(x) = 2 * channel 0 of x, for every output
        up.scope.weight.zero_()
        up.scope.weight[:, 0] = 2.0
    x = torch.zeros(1, 8, 5, 5)
    x[0, 0, :, :2] = 1.0  # left two columns: scope(x) = 2, else 0
    _, disp, scope = sampling_offsets(up, x)
    left, right = 0.5 / (1 + torch.exp(torch.tensor(-2.0))).item(), 0.25
    assert scope[0, :, :, 2:-2, 1:4].flatten().tolist() == pytest.approx([left] * 2 * 2 * 6 * 3, abs=1e-6)
    # Output column 0 reads input position 0.25, clamped to the first pixel centre already:
    # no movement to read the x scope from.
    assert scope[0, :, 0, 2:-2, 0].isnan().all() and not scope[0, :, 1, 2:-2, 0].isnan().any()
    assert scope[0, :, :, 2:-2, 5:8].flatten().tolist() == pytest.approx([right] * 2 * 2 * 6 * 3, abs=1e-6)
    assert torch.allclose(disp[..., 2:-2, 2:-2], 0.4 * scope[..., 2:-2, 2:-2], atol=1e-6)


def test_hook_reads_the_site_inside_a_model_at_any_size() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), DySample(16, groups=4, size=(9, 11)))
    _constant_offsets(net[1], 0.8, 0.0)
    field = visualize_offsets(net, torch.randn(3, 5, 6), out=None)
    assert field.site == "1" and field.output_size == (9, 11) and field.input_size == (5, 6)
    assert field.vector()[0, 2:-2, 2:-2].flatten().tolist() == pytest.approx([0.2] * 5 * 7, abs=1e-6)
    with pytest.raises(ValueError, match="no DySample site 'nope'.*0: 1"):
        visualize_offsets(net, torch.randn(3, 5, 6), site="nope", out=None)
    with pytest.raises(ValueError, match="no DySample module"):
        visualize_offsets(torch.nn.Conv2d(3, 3, 1), torch.randn(3, 5, 6), out=None)


def test_visualize_command_on_a_trained_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    overrides = [
        "model.spec=test_compare:tiny_net:num_classes={num_classes}",  # tests/finetune/test_compare.py
        "data.image_size=32",
        "data.num_samples=8",
        "data.num_val_samples=2",
        "train.batch_size=4",
        "train.max_steps=1",
        "train.checkpoint_every=0",
        "eval.num_images=0",
        "train.progress=never",
        "swap.policy.verbose=false",
    ]
    assert main(["finetune", "demo", "--out", str(run), *[a for o in overrides for a in ("--set", o)]]) == 0
    image = tmp_path / "scene.png"
    Image.effect_mandelbrot((48, 40), (-2.0, -1.5, 1.0, 1.5), 60).convert("RGB").save(image)
    checkpoint = run / "checkpoints" / "last.pt"
    capsys.readouterr()
    # The model spec names a test function: built from a checkpoint only with --trust-spec.
    assert main(["visualize", str(checkpoint), str(image), "--list-sites", "--trust-spec"]) == 0
    listing = capsys.readouterr().out
    assert listing.split("\n")[2].split()[:2] == ["0", "up1"] and "variant=dysample+" in listing

    out = tmp_path / "offsets.png"
    assert main(["visualize", str(checkpoint), str(image), "--site", "0", "--out", str(out), "--trust-spec"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("up1 (dysample+, 8x8 -> 16x16)")  # the image at the recipe's 32 px
    assert "dynamic scope mean" in printed and f"wrote {out}" in printed
    assert out.read_bytes()[:8] == PNG
    with Image.open(out) as picture:
        assert picture.width > 1000 and picture.height > 400  # three readable panels

    assert main(["visualize", str(checkpoint), str(image), "--site", "99", "--trust-spec"]) == 2
    assert "site index 99 out of range" in capsys.readouterr().err


def test_a_checkpoint_spec_that_runs_code_is_not_built(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # An edited checkpoint whose config names os.system as the model builder.
    marker = tmp_path / "pwned"
    spec = f"os:system:command='touch {marker}'"
    config = build_config({"model": {"spec": spec}, "data": {"format": "synthetic"}}).to_dict()
    checkpoint = save_checkpoint(
        tmp_path / "last.pt", {"config": config, "signature": {"num_classes": 2, "swapped": False}, "model": {}}
    )
    image = tmp_path / "scene.png"
    Image.new("RGB", (16, 16)).save(image)

    for extra in ([], ["--list-sites"]):
        assert main(["visualize", str(checkpoint), str(image), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{checkpoint}: its config's model spec {spec!r}" in err and "--trust-spec" in err
    with pytest.raises(UntrustedSpecError, match="trust_spec=True"):
        visualize_offsets(checkpoint, image, out=None)
    assert not marker.exists()


@pytest.mark.parametrize("edit", ["no config", "config not a mapping", "signature not a mapping"])
def test_a_checkpoint_without_a_usable_config_is_a_one_line_error(
    edit: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    release = Path(__file__).resolve().parents[1] / "surgery" / "fixtures" / "release_0_1_0" / "run"
    state = torch.load(release / "checkpoints" / "last.pt", weights_only=True)
    if edit == "no config":
        del state["config"]
    elif edit == "config not a mapping":
        state["config"] = "model: os:system"
    else:
        state["signature"] = ["swapped"]
    checkpoint = tmp_path / "last.pt"
    torch.save(state, checkpoint)
    image = tmp_path / "image.png"
    Image.new("RGB", (24, 24)).save(image)
    assert main(["visualize", str(checkpoint), str(image), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint}: its config or model signature is missing or not a mapping" in err
    assert "Traceback" not in err and not (tmp_path / "o.png").exists()


def test_a_recipe_that_is_not_a_mapping_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="a recipe is a mapping of sections .*, not a list"):
        build_config(["model", "data"])  # type: ignore[arg-type]
