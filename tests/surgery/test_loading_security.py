"""Loading a file never runs code it names; malformed files and bad arguments get errors that name the fix.

Every hostile file here is written by the test itself: a genuine swap file (or ``save_pretrained``
directory) whose recipe is then edited as an attacker would edit a shared checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

import dysample_swap
from dysample_swap import load_swapped, save_swapped, swap_upsamplers
from dysample_swap.cli import main
from dysample_swap.surgery.model_spec import UntrustedSpecError, build_model
from dysample_swap.surgery.policy import SwapPolicy
from dysample_swap.surgery.record import MAX_INPUT_VALUES, POLICY_SCHEMA, RecordError


def plain() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))


def swap_file(tmp_path: Path, edit: Any = None) -> Path:
    """A genuine swap file of :func:`plain`, then ``edit(payload)`` applied to what it holds."""
    path = tmp_path / "net.pt"
    save_swapped(swap_upsamplers(plain(), "dysample", (torch.rand(1, 3, 8, 8),), verbose=False), path)
    if edit is not None:
        payload = torch.load(path, weights_only=True)
        edit(payload)
        torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    "spec",
    [
        "os:system:command='touch {marker}'",
        "subprocess:getoutput:cmd='touch {marker}'",
    ],
)
def test_a_spec_that_names_a_command_never_runs_it(spec: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = spec.format(marker=marker)
    path = swap_file(tmp_path, lambda payload: payload["recipe"].update(model=spec))
    with pytest.raises(UntrustedSpecError) as caught:
        load_swapped(path)
    assert not marker.exists()
    message = str(caught.value)
    assert spec in message and "model=" in message and "trust_spec=True" in message


def test_a_spec_that_loads_a_pickle_never_unpickles_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    bomb = tmp_path / "other.pt"
    bomb.write_bytes(pickle.dumps(Payload()))
    spec = f"torch:load:f='{bomb}',weights_only=False"
    path = swap_file(tmp_path, lambda payload: payload["recipe"].update(model=spec))
    with pytest.raises(UntrustedSpecError, match="torch:load"):
        load_swapped(path)
    assert not marker.exists()


def test_build_model_refuses_code_specs_unless_trusted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UntrustedSpecError, match="trust_spec=True"):
        build_model(f"os:system:command='touch {marker}'")
    assert not marker.exists()
    assert isinstance(build_model("torch.nn:Identity", trust_spec=True), nn.Identity)
    assert type(build_model("timm:resnet18:num_classes=3")).__name__ == "ResNet"  # library builders need no trust
    with pytest.raises(ValueError, match="timm has no model 'hf-hub'"):
        build_model("timm:hf-hub")  # a hub name would fetch a config: not one of timm's constructors


def test_cli_swap_trusts_the_spec_typed_on_its_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "net.pt"
    assert main(["swap", "test_loading_security:plain", "--input-shape", "1x3x8x8", "--out", str(out)]) == 0
    assert f"load_swapped({str(out)!r}, trust_spec=True)" in capsys.readouterr().out
    with pytest.raises(UntrustedSpecError):
        load_swapped(out)
    assert isinstance(load_swapped(out, trust_spec=True)[1], dysample_swap.DySample)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.pop("recipe"), "its recipe None is not a dict"),
        (lambda p: p["recipe"].update(variant=3), "swap 1 of its record: variant 3 is not a string"),
        (lambda p: p["recipe"].update(variant="dysampel"), "variant 'dysampel' is not one of dysample, dysample+"),
        (lambda p: p["recipe"].pop("policy"), "swap 1 of its record: no 'policy'"),
        (lambda p: p["recipe"]["policy"].update(example_inputs=[1]), "policy option 'example_inputs' is not one of"),
        (lambda p: p["recipe"]["policy"].update(include={"a": 1}), "include=.* is not a path or glob"),
        (lambda p: p["recipe"]["policy"].update(swap_final="yes"), "swap_final='yes' is not bool"),
        (lambda p: p["recipe"]["policy"].update(init="random"), r"init='random' is not one of \('match', 'paper'\)"),
        (lambda p: p["recipe"].update(inputs=[{"tensor": [1, 3, -8, 8]}]), r"tensor shape \[1, 3, -8, 8\] is not"),
        (lambda p: p["recipe"].update(inputs=[{"code": "x"}]), "is not {'tensor': SHAPE}"),
        (lambda p: p["recipe"].update(then={"a": 1}), "later swaps .* are not a list"),
        (lambda p: p["recipe"].update(then=[{"variant": "dysample"}] * 64), "not a list of 1 to 64 swap entries"),
        (lambda p: p["recipe"].update(model=["smp:FPN"]), r"model spec \['smp:FPN'\] is not a string"),
        (lambda p: p.update(state_dict={"w": "not a tensor"}), "state_dict is not a dict of named tensors"),
    ],
)
def test_a_malformed_swap_file_names_the_field(edit: Any, message: str, tmp_path: Path) -> None:
    path = swap_file(tmp_path, edit)
    with pytest.raises(RecordError, match=message):
        load_swapped(path, model=plain())


def test_a_recorded_giant_input_shape_allocates_nothing(tmp_path: Path) -> None:
    path = swap_file(tmp_path, lambda p: p["recipe"].update(inputs=[{"tensor": [1, 3, 20000, 20000]}]))
    with pytest.raises(RecordError, match=f"1,200,000,000 values, more than the {MAX_INPUT_VALUES:,}"):
        load_swapped(path, model=plain())
    images = [[3, 4000, 4000]] * 2  # detector images add up too
    path = swap_file(tmp_path, lambda p: p["recipe"].update(inputs=[{"images": images}]))
    with pytest.raises(RecordError, match="96,000,000 values"):
        load_swapped(path, model=plain())


def test_the_record_schema_knows_every_saveable_policy_option() -> None:
    saveable = {f for f in SwapPolicy.__dataclass_fields__ if f != "verbose"}
    assert set(POLICY_SCHEMA) == saveable


def test_a_malformed_framework_record_names_the_field(tmp_path: Path) -> None:
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8))
    swap_upsamplers(model, "dysample", (torch.rand(1, 3, 64, 64),), verbose=False).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["_dysample_swap"]["swaps"][0]["inputs"] = [{"tensor": [1, 3, 20000, 20000]}]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecordError, match="config.json: swap 1 of its record: its example inputs hold"):
        dysample_swap.from_pretrained(tmp_path)
    config["_dysample_swap"]["swaps"][0].update(inputs=[{"tensor": [1, 3, 64, 64]}], variant=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecordError, match="variant None is not a string"):
        dysample_swap.from_pretrained(tmp_path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", "model.bin"])
def test_a_safetensors_index_cannot_name_files_outside_the_directory(shard: str, tmp_path: Path) -> None:
    directory = tmp_path / "saved"
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8))
    swap_upsamplers(model, "dysample", (torch.rand(1, 3, 64, 64),), verbose=False).save_pretrained(directory)
    (directory / "model.safetensors").rename(tmp_path / "outside.safetensors")
    index = {"metadata": {}, "weight_map": {"segmentation_head.0.weight": shard}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="is not a .safetensors file inside the directory; refusing to read it"):
        dysample_swap.from_pretrained(directory)


def test_a_safetensors_shard_that_links_outside_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "saved"
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8))
    swap_upsamplers(model, "dysample", (torch.rand(1, 3, 64, 64),), verbose=False).save_pretrained(directory)
    (directory / "model.safetensors").rename(tmp_path / "outside.safetensors")
    (directory / "shard.safetensors").symlink_to(tmp_path / "outside.safetensors")
    index = {"metadata": {}, "weight_map": {"segmentation_head.0.weight": "shard.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="links outside"):
        dysample_swap.from_pretrained(directory)


def test_swap_upsamplers_names_a_wrong_model_or_variant() -> None:
    with pytest.raises(TypeError, match=r"expected the network as an nn.Module .*got str 'x'.*build_model"):
        swap_upsamplers("x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"upsampler name must be a string such as 'dysample\+', not None"):
        swap_upsamplers(plain(), variant=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected the network as an nn.Module"):
        dysample_swap.find_upsamplers(None)  # type: ignore[arg-type]


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores mode bits: sysfs refuses it too)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return folder


@pytest.mark.parametrize("where", ["read-only", "missing", "a folder"])
def test_cli_swap_checks_out_before_swapping(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = {
        "read-only": _read_only_folder(tmp_path) / "net.pt",
        "missing": tmp_path / "no" / "net.pt",
        "a folder": tmp_path,
    }[where]
    assert main(["swap", "smp:FPN:encoder_name=resnet18,encoder_depth=3", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # failed before the swap ran (it prints its table)
    assert f"cannot write {out}" in captured.err and "Traceback" not in captured.err
    assert not out.is_file()


def test_a_failed_save_leaves_the_old_file_and_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = swap_file(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"x" * 4096)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    model = swap_upsamplers(plain(), "dysample", (torch.rand(1, 3, 8, 8),), verbose=False)
    with pytest.raises(ValueError, match=f"cannot write {path}: disk full"):
        save_swapped(model, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]
