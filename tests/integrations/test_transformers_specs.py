"""``transformers:CLASS`` and ``dysample_swap:NAME`` model specs: built from config values, local
safetensors only, never code a file names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dysample_swap.surgery.model_spec import build_model, is_owned, parse_spec

GLPN = (
    "transformers:GLPNForDepthEstimation:hidden_sizes=[8,8,16,16],depths=[1,1,1,1],"
    "num_attention_heads=[1,1,1,1],decoder_hidden_size=8"
)


def test_config_values_lists_and_sub_configs_reach_the_model() -> None:
    model = build_model(GLPN)
    assert type(model).__name__ == "GLPNForDepthEstimation"
    assert model.config.hidden_sizes == [8, 8, 16, 16] and model.config.decoder_hidden_size == 8
    anything = build_model(
        "transformers:DepthAnythingForDepthEstimation:backbone_config.hidden_size=32,"
        "backbone_config.num_hidden_layers=4,backbone_config.num_attention_heads=2,backbone_config.intermediate_size=64,"
        "backbone_config.out_indices=[1,2,3,4],neck_hidden_sizes=[8,16,32,32],fusion_hidden_size=16,"
        "head_hidden_size=8,reassemble_hidden_size=32"
    )
    backbone = anything.config.backbone_config
    assert (backbone.hidden_size, backbone.out_indices, backbone.out_features) == (
        32,
        [1, 2, 3, 4],
        ["stage1", "stage2", "stage3", "stage4"],
    )
    assert backbone.reshape_hidden_states is False  # the parent's own sub-config defaults are kept
    assert anything(torch.rand(1, 3, 28, 28)).predicted_depth.shape == (1, 28, 28)
    assert is_owned(GLPN) and is_owned("dysample_swap:panoptic_fpn_resnet50_fpn")
    assert parse_spec("transformers:X:a=[1,2],b=(3,4),c=x")[2] == {"a": [1, 2], "b": (3, 4), "c": "x"}


def test_wrong_names_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="did you mean GLPNForDepthEstimation"):
        build_model("transformers:GLPNForDepthEstimaton")
    with pytest.raises(ValueError, match="GLPNConfig has no setting 'hiden_sizes'"):
        build_model("transformers:GLPNForDepthEstimation:hiden_sizes=[8,8,8,8]")
    with pytest.raises(ValueError, match="no sub-config 'decoder_config'"):
        build_model("transformers:GLPNForDepthEstimation:decoder_config.x=1")
    with pytest.raises(ValueError, match="dysample_swap ships no model 'panoptic_fpn'.*panoptic_fpn_resnet50_fpn"):
        build_model("dysample_swap:panoptic_fpn")
    with pytest.raises(ValueError, match="transformers has no model class 'AutoTokenizer'"):
        build_model("transformers:AutoTokenizer")  # a class, but not a model: nothing is loaded


def test_weights_come_from_a_local_safetensors_folder_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = build_model(GLPN)
    saved.save_pretrained(tmp_path / "model")
    loaded = build_model(f"transformers:GLPNForDepthEstimation:weights={tmp_path / 'model'}")
    for (name, a), (_, b) in zip(saved.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    # config values still apply on top of the folder's config.json
    assert (
        build_model(f"transformers:GLPNForDepthEstimation:weights={tmp_path / 'model'},max_depth=3").config.max_depth
        == 3
    )
    # a folder holding pickled weights only is refused (no unpickling), and so is a hub id (no download)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    saved.config.save_pretrained(pickled)
    torch.save(saved.state_dict(), pickled / "pytorch_model.bin")
    for where in (pickled, "Intel/dpt-large"):
        with pytest.raises(ValueError, match="not a local folder holding model.safetensors"):
            build_model(f"transformers:GLPNForDepthEstimation:weights={where}")
