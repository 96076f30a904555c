"""Save and reload swapped models: the frameworks' own save_pretrained, and save_swapped for any model.

Each round trip perturbs every weight first (a fresh swap has zero offsets, which a reload would
reproduce without loading anything), then checks that the reloaded model has the same DySample
modules, every saved tensor, and bit-identical outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import DPTConfig, DPTForDepthEstimation, SegformerConfig, SegformerForSemanticSegmentation

import dysample_swap
from dysample_swap import DySample, load_swapped, save_swapped, swap_report, swap_upsamplers, unswap
from dysample_swap.surgery.record import RecordError, record_swap

X64 = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)),)


def tiny_dpt() -> DPTForDepthEstimation:
    return DPTForDepthEstimation(
        DPTConfig(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=64,
            patch_size=16,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=32,
            reassemble_factors=[4, 2, 1, 0.5],
            head_hidden_size=16,
        )
    )


def tiny_segformer() -> SegformerForSemanticSegmentation:
    return SegformerForSemanticSegmentation(
        SegformerConfig(
            depths=[1, 1, 1, 1],
            sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[8, 16, 32, 64],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=32,
            num_labels=3,
        )
    )


def tiny_unet() -> smp.Unet:
    return smp.Unet(
        "tu-mobilenetv3_small_050", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2
    )


class UserNet(nn.Module):
    """A home-made decoder: an ``nn.Upsample`` layer and an ``F.interpolate`` call."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.mid = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mid(self.up(self.stem(x)))
        return self.head(F.interpolate(y, scale_factor=2.0, mode="bilinear"))


class OtherNet(UserNet):
    """Same layers, another class."""


def perturb(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator).to(p.dtype))
    return model


def first_output(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def dysample_paths(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, DySample)]


def assert_same_model(reloaded: nn.Module, original: nn.Module, *inputs: torch.Tensor) -> None:
    # a module that the swap rewrites gets a generated subclass with the same name
    assert type(reloaded).__qualname__ == type(original).__qualname__
    assert dysample_paths(reloaded) == dysample_paths(original) and dysample_paths(original)
    saved, loaded = original.state_dict(), reloaded.state_dict()
    assert list(loaded) == list(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key
    original.eval()
    with torch.no_grad():
        assert torch.equal(first_output(reloaded(*inputs)), first_output(original(*inputs)))


@pytest.mark.parametrize("make", [tiny_dpt, tiny_segformer], ids=["dpt", "segformer"])
def test_transformers_save_pretrained_then_from_pretrained(make: Callable[[], nn.Module], tmp_path: Path) -> None:
    model = perturb(swap_upsamplers(make(), "dysample+", X64, verbose=False))
    assert swap_report(model).swapped
    model.save_pretrained(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())["dysample_swap"]
    assert [(s["variant"], s["inputs"]) for s in record["swaps"]] == [("dysample+", [{"tensor": [1, 3, 64, 64]}])]

    reloaded = dysample_swap.from_pretrained(tmp_path)
    assert not reloaded.training
    assert_same_model(reloaded, model, torch.rand(1, 3, 64, 64))


def test_transformers_own_loader_drops_the_dysample_weights(tmp_path: Path) -> None:
    """What the README warns about: transformers' from_pretrained builds the plain model."""
    model = swap_upsamplers(tiny_dpt(), "dysample+", X64, verbose=False)
    model.save_pretrained(tmp_path)
    plain = DPTForDepthEstimation.from_pretrained(tmp_path)
    assert dysample_paths(plain) == []


def test_transformers_reloaded_model_saves_again_also_sharded(tmp_path: Path) -> None:
    model = perturb(swap_upsamplers(tiny_dpt(), "dysample", X64, verbose=False))
    model.save_pretrained(tmp_path / "first")
    reloaded = dysample_swap.from_pretrained(tmp_path / "first")  # swapped again, so it carries the record
    reloaded.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "sharded" / "model.safetensors").exists()
    assert_same_model(dysample_swap.from_pretrained(tmp_path / "sharded"), model, X64[0])


def test_smp_save_pretrained_then_from_pretrained(tmp_path: Path) -> None:
    model = perturb(swap_upsamplers(tiny_unet(), "dysample-s+", X64, verbose=False, exclude="decoder.blocks.2"))
    assert len(swap_report(model).swapped) == 2
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_model_class"] == "Unet"
    swap = config["_dysample_swap"]["swaps"][0]
    assert swap["policy"] == {}  # the per-site decisions replace include/exclude
    assert swap["sites"] == [[d.path, d.in_channels] for d in swap_report(model).swapped]
    assert all(not path.startswith("decoder.blocks.2") for path, _ in swap["sites"])
    with pytest.raises(RuntimeError, match="Unexpected key"):
        smp.from_pretrained(tmp_path)  # what the README warns about: smp's loader refuses the weights
    reloaded = dysample_swap.from_pretrained(tmp_path)
    assert not reloaded.training
    assert_same_model(reloaded, model, torch.rand(1, 3, 96, 64))


def test_smp_in_bfloat16_comes_back_in_bfloat16(tmp_path: Path) -> None:
    model = perturb(swap_upsamplers(tiny_unet(), "dysample", X64, verbose=False)).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    reloaded = dysample_swap.from_pretrained(tmp_path)
    assert {p.dtype for p in reloaded.parameters()} == {torch.bfloat16}
    assert_same_model(reloaded, model, X64[0].to(torch.bfloat16))


def test_user_model_save_swapped_then_load_swapped_with_model(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    model = perturb(swap_upsamplers(UserNet(), "dysample+", verbose=False))
    assert len(swap_report(model).swapped) == 2
    save_swapped(model, path)
    assert_same_model(load_swapped(path, model=UserNet()), model, torch.rand(2, 3, 40, 56))


def test_user_model_swapped_twice_reloads_both_swaps(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    model = swap_upsamplers(UserNet(), "dysample", verbose=False, include="up")
    model = perturb(swap_upsamplers(model, "dysample+", verbose=False))
    assert [m.variant for m in model.modules() if isinstance(m, DySample)] == ["dysample", "dysample+"]
    save_swapped(model, path)
    reloaded = load_swapped(path, model=UserNet())
    assert [m.variant for m in reloaded.modules() if isinstance(m, DySample)] == ["dysample", "dysample+"]
    assert_same_model(reloaded, model, X64[0])


def test_load_swapped_errors_name_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    save_swapped(swap_upsamplers(UserNet(), "dysample+", verbose=False), path)
    with pytest.raises(ValueError, match=r"records no model spec.*pass a freshly built UserNet"):
        load_swapped(path)
    with pytest.raises(
        ValueError,
        match=r"saved from a test_persist\.UserNet, but the model given is a "
        r"test_persist\.OtherNet",
    ):
        load_swapped(path, model=OtherNet())
    with pytest.raises(ValueError, match="already swapped; pass a freshly built, unswapped UserNet"):
        load_swapped(path, model=swap_upsamplers(UserNet(), verbose=False))
    with pytest.raises(
        ValueError, match=r"swapped \[\['up', 16\].*but it records \[\['up', 8\].*the model given differs"
    ):
        load_swapped(path, model=UserNet(width=16))  # caught by the recorded sites, before the weights


def test_save_swapped_refuses_what_cannot_be_replayed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="was not swapped"):
        save_swapped(UserNet(), tmp_path / "plain.pt")
    swapped = swap_upsamplers(UserNet(), verbose=False)
    swapped.dysample_swap_report.inputs = None  # as after a discovery on inputs that are not tensors
    with pytest.raises(ValueError, match="cannot be re-applied: its example inputs are not tensors"):
        save_swapped(swapped, tmp_path / "dicts.pt")


def test_a_swap_selected_by_a_predicate_saves_and_reloads_at_the_same_sites(tmp_path: Path) -> None:
    model = perturb(swap_upsamplers(UserNet(), "dysample", verbose=False, include=lambda site: site.path == "up"))
    path = tmp_path / "predicate.pt"
    save_swapped(model, path)
    reloaded = load_swapped(path, model=UserNet())
    assert [d.path for d in swap_report(reloaded).swapped] == ["up"]
    assert_same_model(reloaded, model, X64[0])


def test_a_replay_that_swaps_other_sites_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    save_swapped(swap_upsamplers(UserNet(), "dysample", verbose=False), path)
    payload = torch.load(path, weights_only=True)
    payload["recipe"]["sites"] = [["up", 999]]  # as if another model (other channels) had been swapped
    torch.save(payload, path)
    with pytest.raises(
        ValueError, match=r"swapped \[\['up', \d+\]\] \(path, channels\), but it records \[\['up', 999\]\]"
    ):
        load_swapped(path, model=UserNet())
    payload["recipe"]["sites"] = [["up", "8"]]
    torch.save(payload, path)
    with pytest.raises(RecordError, match=r"site \['up', '8'\] is not a \[path, channels\] pair"):
        load_swapped(path, model=UserNet())


def test_format_1_files_still_load(tmp_path: Path) -> None:
    spec = "test_persist:UserNet:width=4"
    path = tmp_path / "net.pt"
    model = perturb(swap_upsamplers(UserNet(width=4), "dysample", verbose=False))
    save_swapped(model, path, spec)
    payload = torch.load(path, weights_only=True)
    recipe = payload["recipe"]
    old = {
        "format": "dysample_swap.swapped/1",
        "state_dict": payload["state_dict"],
        "recipe": {k: recipe[k] for k in ("model", "variant", "policy", "inputs")},
    }
    torch.save(old, path)
    assert_same_model(load_swapped(path, trust_spec=True), model, X64[0])  # its own test module


def test_from_pretrained_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json; write the directory with model.save_pretrained"):
        dysample_swap.from_pretrained(tmp_path)
    tiny_unet().save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no '_dysample_swap' swap record: the model was saved before it was swapped"):
        dysample_swap.from_pretrained(tmp_path / "plain")

    swapped = swap_upsamplers(tiny_unet(), verbose=False)
    swapped.dysample_swap_report.inputs = None  # as after a discovery on inputs that are not tensors
    record_swap(swapped)  # mirrored into the hub-mixin config again
    swapped.save_pretrained(tmp_path / "dicts")  # the framework's save works; reloading says why not
    with pytest.raises(ValueError, match="swap cannot be re-applied: its example inputs are not tensors"):
        dysample_swap.from_pretrained(tmp_path / "dicts")

    for make, key in ((tiny_unet, "_dysample_swap"), (tiny_dpt, "dysample_swap")):
        directory = tmp_path / key
        swap_upsamplers(make(), "dysample+", X64, verbose=False).save_pretrained(directory)
        config = json.loads((directory / "config.json").read_text())
        config[key]["swaps"][0]["variant"] = "dysample"  # static scope: no scope.weight
        (directory / "config.json").write_text(json.dumps(config))
        with pytest.raises(
            ValueError, match=r"(?s)do not fit the model rebuilt from its recipe.*dysample_0\.scope\.weight"
        ):
            dysample_swap.from_pretrained(directory)
        (directory / "model.safetensors").unlink()
        with pytest.raises(ValueError, match="no model.safetensors|no file named model.safetensors"):
            dysample_swap.from_pretrained(directory)


def test_unswap_drops_the_record(tmp_path: Path) -> None:
    model = swap_upsamplers(tiny_dpt(), "dysample", X64, verbose=False)
    unswap(model)
    model.save_pretrained(tmp_path)
    assert "dysample_swap" not in json.loads((tmp_path / "config.json").read_text())
    assert dysample_paths(DPTForDepthEstimation.from_pretrained(tmp_path)) == []
