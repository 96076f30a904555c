"""The depth, panoptic and mask-classification task adapters, on real models from the model specs."""

from __future__ import annotations

import math

import pytest
import torch

from dysample_swap.finetune.data import build_dataset
from dysample_swap.finetune.tasks import DepthTask, PanopticTask, SegmentationTask, make_task
from dysample_swap.finetune.tasks.depth import silog_loss
from dysample_swap.finetune.tasks.mask_classification import semantic_to_mask_labels
from dysample_swap.surgery.model_spec import build_model

TINY_DPT = (
    "transformers:DPTForDepthEstimation:hidden_size=32,num_hidden_layers=4,num_attention_heads=2,"
    "intermediate_size=64,image_size=32,neck_hidden_sizes=[8,16,32,32],fusion_hidden_size=16,"
    "backbone_out_indices=[0,1,2,3]"
)
TINY_SWIN = "backbone_config.embed_dim=16,backbone_config.depths=[1,1,1,1],backbone_config.num_heads=[1,1,2,2]"
TINY_MASKFORMER = (
    f"transformers:MaskFormerForInstanceSegmentation:{TINY_SWIN},num_labels=4,fpn_feature_size=32,"
    "mask_feature_size=32,decoder_config.d_model=32,decoder_config.decoder_layers=1,decoder_config.encoder_layers=0,"
    "decoder_config.decoder_ffn_dim=64,decoder_config.decoder_attention_heads=2,decoder_config.num_queries=6"
)
TINY_MASK2FORMER = (
    f"transformers:Mask2FormerForUniversalSegmentation:{TINY_SWIN},num_labels=4,feature_size=32,mask_feature_size=32,"
    "hidden_dim=32,encoder_layers=1,decoder_layers=2,num_queries=6,dim_feedforward=64,encoder_feedforward_dim=64,"
    "num_attention_heads=2,train_num_points=64"
)


# ------------------------------------------------------------------------------------------ depth
def test_silog_by_hand() -> None:
    pred = torch.tensor([[[1.0, 2.0], [4.0, 9.0]]])
    target = torch.tensor([[[2.0, 2.0], [2.0, 0.0]]])  # last pixel: no measurement
    g = [math.log(0.5), 0.0, math.log(2.0)]
    mean = sum(g) / 3
    var = sum((x - mean) ** 2 for x in g) / 2  # unbiased, as torch.var
    assert silog_loss(pred, target).item() == pytest.approx(math.sqrt(var + 0.15 * mean**2), rel=1e-6)
    # a zero prediction is clamped at min_depth before the log, not -inf
    assert math.isfinite(silog_loss(torch.zeros(1, 1, 2), torch.ones(1, 1, 2)).item())


def test_depth_task_reads_every_output_form_and_resizes_to_the_truth() -> None:
    task = DepthTask(1e-3, 10.0)
    images, depth = torch.zeros(2, 3, 8, 8), torch.full((2, 8, 8), 2.0)

    class Tensor3(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 4, 4), 20.0)  # half size, beyond max_depth

    pred = task.predict(Tensor3(), (images, depth))
    assert pred.shape == (2, 8, 8) and torch.equal(pred, torch.full((2, 8, 8), 10.0))  # clamped
    dpt = build_model(TINY_DPT).eval()
    assert task.predict(dpt, (torch.zeros(1, 3, 32, 32), torch.ones(1, 20, 24))).shape == (1, 20, 24)
    with pytest.raises(ValueError, match="one channel"):
        task.loss(torch.nn.Conv2d(3, 2, 1), (images, depth))


def test_eigen_crop_is_applied_to_the_targets_only_for_nyu() -> None:
    depth = torch.ones(1, 480, 640)
    cropped = DepthTask(1e-3, 10.0, "eigen").targets((None, depth))
    assert cropped.sum().item() == (471 - 45) * (601 - 41)
    assert (
        cropped[0, 45, 41] == 1 and cropped[0, 44, 41] == 0 and cropped[0, 470, 600] == 1 and cropped[0, 471, 600] == 0
    )
    assert torch.equal(DepthTask(1e-3, 10.0).targets((None, depth)), depth)


def test_depth_training_step_on_synthetic_scenes_reduces_nothing_to_nan() -> None:
    data = build_dataset({"format": "synthetic", "task": "depth", "num_samples": 2, "image_size": 32}, "train")
    task = make_task("depth", data)
    assert isinstance(task, DepthTask) and task.max_depth == data.max_depth
    model = build_model("smp:Unet:encoder_name=resnet18,encoder_depth=3,decoder_channels=[32,16,8],classes=1")
    batch = torch.utils.data.default_collate([data[0], data[1]])
    loss = task.loss(model, batch)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 0
    metrics = task.new_metrics(data)
    metrics.update(task.predict(model.eval(), batch), task.targets(batch))
    assert set(metrics.compute()) >= {"delta1", "abs_rel", "rmse", "silog"}


def test_depth_pictures() -> None:
    task = DepthTask(1e-3, 10.0)
    truth = torch.tensor([[0.0, 1.0, 9.0]])
    picture = task.picture(None, truth)
    assert picture.dtype == torch.uint8 and picture[:, 0, 0].tolist() == [0, 0, 0]  # no measurement
    assert picture[2, 0, 1] > picture[0, 0, 1] and picture[0, 0, 2] > picture[2, 0, 2]  # near blue, far red
    error = task.error_picture(torch.tensor([[5.0, 1.0, 18.0]]), truth)
    assert error[:, 0, 0].tolist() == [128, 128, 128]  # grey where nothing was measured
    assert error[:, 0, 2].sum() > error[:, 0, 1].sum()  # 100 % off is brighter than exact


# --------------------------------------------------------------------------------------- panoptic
def test_panoptic_predictions_are_mapped_to_category_ids() -> None:
    task = PanopticTask(thing_ids=[3, 5], stuff_ids=[7, 9], names={3: "a", 5: "b", 7: "c", 9: "d"})

    class Toy(torch.nn.Module):  # classes: 0 void, 1..2 things, 3..4 stuff (the model's numbering)
        def forward(self, images: list) -> list:
            return [{"panoptic": torch.tensor([[[1, 1], [2, 2], [3, 0]], [[4, 0], [0, 0], [2, 3]]])}]

    out = task.predict(Toy(), ([torch.zeros(3, 2, 3)], None))[0]
    assert out.tolist() == [[[3, 1], [5, 2], [7, 0]], [[9, 0], [0, 0], [5, 3]]]
    assert task.num_classes == 3 and task.num_stuff == 2 and task.class_names == ["background", "a", "b"]
    segments = torch.zeros(6, 6, 2, dtype=torch.long)
    segments[:2, :2] = torch.tensor([3, 1])  # a thing, top left
    segments[4:] = torch.tensor([7, 0])  # stuff, bottom rows
    picture = task.picture(torch.zeros(3, 6, 6), segments)
    assert picture.shape == (3, 6, 6) and picture[:, 2, 4].tolist() == [0, 0, 0]  # void keeps the image
    assert picture[:, 5, 3].tolist() != [0, 0, 0] and picture[:, 0, 0].tolist() != [0, 0, 0]


def test_panoptic_fpn_trains_and_is_scored_on_synthetic_scenes() -> None:
    data = build_dataset({"format": "synthetic", "task": "panoptic", "num_samples": 2, "image_size": 64}, "train")
    task = make_task("panoptic", data)
    assert isinstance(task, PanopticTask) and task.thing_ids == data.thing_ids and task.stuff_ids == data.stuff_ids
    model = build_model(
        "dysample_swap:panoptic_fpn_resnet50_fpn:min_size=64,max_size=64,rpn_post_nms_top_n_train=20,"
        f"rpn_post_nms_top_n_test=10,box_batch_size_per_image=16,stuff_area=16,score_threshold=0.0,"
        f"num_classes={task.num_classes},num_stuff={task.num_stuff}"
    )
    batch = task.collate([data[0], data[1]])
    loss = task.loss(model.train(), batch)
    loss.backward()
    assert math.isfinite(loss.item())
    metrics = task.new_metrics(data)
    preds = task.predict(model.eval(), batch)
    assert [p.shape for p in preds] == [t["panoptic"].shape for t in batch[1]]
    assert set(torch.cat([p[..., 0].flatten() for p in preds]).tolist()) <= {0, *data.thing_ids, *data.stuff_ids}
    metrics.update(preds, task.targets(batch))
    assert metrics.images == 2 and 0.0 <= metrics.compute()["PQ"] <= 1.0
    # the ground truth scores perfectly against itself through the same path
    perfect = task.new_metrics(data)
    perfect.update(task.targets(batch), task.targets(batch))
    assert perfect.compute()["PQ"] == 1.0


# ------------------------------------------------------------------------------ mask classification
def test_mask_labels_from_a_semantic_mask() -> None:
    masks, classes = semantic_to_mask_labels(torch.tensor([[[3, 3], [1, 255]], [[255, 255], [255, 255]]]), 255)
    assert classes[0].tolist() == [1, 3] and masks[0].tolist() == [[[0, 0], [1, 0]], [[1, 1], [0, 0]]]
    assert classes[1].tolist() == [] and masks[1].shape == (0, 2, 2)


@pytest.mark.parametrize("spec", [TINY_MASKFORMER, TINY_MASK2FORMER], ids=["maskformer", "mask2former"])
def test_maskformer_trains_with_its_own_loss_and_predicts_with_its_post_processing(spec: str) -> None:
    import transformers

    torch.manual_seed(0)
    model = build_model(spec)
    task = SegmentationTask(4, 255, ["a", "b", "c", "d"])
    images = torch.rand(2, 3, 32, 32)
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[0, :16] = 2
    masks[1] = 255  # one image without a label
    masks[1, :4, :4] = 3
    mask_labels, class_labels = semantic_to_mask_labels(masks, 255)
    torch.manual_seed(1)  # Mask2Former samples its loss points at random
    own = model.eval()(pixel_values=images, mask_labels=mask_labels, class_labels=class_labels).loss
    torch.manual_seed(1)
    assert task.loss(model, (images, masks)).item() == pytest.approx(own.item(), rel=1e-6)  # the model's own loss
    loss = task.loss(model.train(), (images, masks))
    loss.backward()
    assert model.model.pixel_level_module.decoder.parameters().__next__().grad is not None
    empty = task.loss(model, (images, torch.full_like(masks, 255)))
    assert empty.item() == 0.0 and empty.requires_grad
    model.eval()
    pred = task.predict(model, (images, masks))
    processor_name = "Mask2FormerImageProcessor" if "Mask2Former" in spec else "MaskFormerImageProcessor"
    with torch.no_grad():
        expected = getattr(transformers, processor_name)().post_process_semantic_segmentation(
            model(pixel_values=images), target_sizes=[(32, 32), (32, 32)]
        )
    assert pred.shape == (2, 32, 32) and torch.equal(pred, torch.stack(expected))
