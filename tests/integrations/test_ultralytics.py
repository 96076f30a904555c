"""ultralytics YOLO: ``swap_yolo`` keeps DySample through ultralytics' own train / val / predict / export.

Everything runs on the real ultralytics package with a YOLOv8n built from its YAML (random weights,
nothing downloaded) and a tiny YOLO-format data set written here: 8 PNGs with one box each, 2
classes, so the trainer's network has a different class count (2) than the YAML (80).
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no network checks

import copy
import functools
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from PIL import Image
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

from dysample_swap import DySample, swap_report, swap_upsamplers
from dysample_swap.integrations import is_ultralytics_model, is_ultralytics_network
from dysample_swap.integrations.ultralytics import KeepSwapInTraining, swap_yolo
from dysample_swap.surgery.record import swap_record

IMAGE = 96  # stride 32: the first upsampler sees 3x3 (at 2x2 every nearest anchor sits on the border, where grid_sample passes no gradient)
UPSAMPLE_LAYERS = (10, 13)  # the two nn.Upsample layers of YOLOv8's neck
TRAIN_ARGS = dict(
    epochs=1, imgsz=IMAGE, batch=2, nbs=2, device="cpu", workers=0, plots=False, amp=False, exist_ok=True, verbose=False
)  # nbs=batch: one optimizer step per batch, 4 in all


def write_dataset(root: Path) -> Path:
    """8 PNGs (a red or green rectangle on grey) with YOLO labels; returns the data.yaml."""
    images, labels = root / "images" / "train", root / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(8):
        cls = k % 2
        x0, y0 = (int(v) for v in rng.integers(4, 30, 2))
        w, h = (int(v) for v in rng.integers(16, 30, 2))
        pixels = np.full((IMAGE, IMAGE, 3), 40, np.uint8)
        pixels[y0 : y0 + h, x0 : x0 + w] = (200, 60, 60) if cls == 0 else (60, 200, 60)
        Image.fromarray(pixels).save(images / f"{k}.png")
        (labels / f"{k}.txt").write_text(
            f"{cls} {(x0 + w / 2) / IMAGE:.5f} {(y0 + h / 2) / IMAGE:.5f} {w / IMAGE:.5f} {h / IMAGE:.5f}\n"
        )
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n  0: red\n  1: green\n")
    return data


def dysamples(network: nn.Module) -> dict[str, DySample]:
    return {name: m for name, m in network.named_modules() if isinstance(m, DySample)}


def dysample_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v.detach().clone().float()
        for name, m in dysamples(network).items()
        for k, v in m.state_dict().items()
    }


def layer_bookkeeping(network: nn.Module) -> dict[int, tuple[Any, ...]]:
    return {
        i: (network.model[i].i, network.model[i].f, network.model[i].type, network.model[i].np) for i in UPSAMPLE_LAYERS
    }


@dataclass
class Inspection:
    """What callbacks saw inside ultralytics' trainer."""

    model_dysamples: list[str] = field(default_factory=list)
    ema_dysamples: list[str] = field(default_factory=list)
    in_optimizer: dict[str, bool] = field(default_factory=dict)
    start_state: dict[str, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, float] = field(default_factory=dict)
    ema_saved: dict[str, torch.Tensor] = field(default_factory=dict)
    bookkeeping: dict[int, tuple[Any, ...]] = field(default_factory=dict)


def inspect_training(yolo: Any) -> Inspection:
    """Add callbacks to ``yolo`` that record the trainer's network, optimizer, gradients and EMA."""
    seen = Inspection()

    def record_gradient(name: str, grad: torch.Tensor) -> None:
        seen.grads[name] = max(seen.grads[name], grad.abs().max().item())

    def after_setup(trainer: Any) -> None:  # the optimizer and the EMA exist now
        network = trainer.model
        in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        seen.model_dysamples = sorted(dysamples(network))
        seen.ema_dysamples = sorted(dysamples(trainer.ema.ema))
        seen.start_state = dysample_state(network)
        seen.bookkeeping = layer_bookkeeping(network)
        for name, module in dysamples(network).items():
            for key, p in module.named_parameters():
                full = f"{name}.{key}"
                seen.in_optimizer[full] = id(p) in in_optimizer
                seen.grads[full] = 0.0
                p.register_hook(functools.partial(record_gradient, full))

    def on_save(trainer: Any) -> None:
        seen.ema_saved = dysample_state(trainer.ema.ema)

    yolo.add_callback("on_pretrain_routine_end", after_setup)
    yolo.add_callback("on_model_save", on_save)
    return seen


@dataclass
class Run:
    yolo: Any
    data: Path
    image: Path
    out: Path
    seen: Inspection
    bookkeeping: dict[int, tuple[Any, ...]]
    parameters_added: int
    last: Path
    best: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Swap a YOLOv8n built from its YAML, train it one epoch with ultralytics' own trainer."""
    root = tmp_path_factory.mktemp("yolo")
    data = write_dataset(root / "data")
    yolo = YOLO("yolov8n.yaml")
    bookkeeping = layer_bookkeeping(yolo.model)
    swap_yolo(yolo, "dysample+", verbose=False)
    added = swap_report(yolo.model).parameters_added
    seen = inspect_training(yolo)
    yolo.train(data=str(data), project=str(root / "runs"), name="train", **TRAIN_ARGS)
    weights = root / "runs" / "train" / "weights"
    return Run(
        yolo,
        data,
        root / "data" / "images" / "train" / "0.png",
        root,
        seen,
        bookkeeping,
        added,
        weights / "last.pt",
        weights / "best.pt",
    )


def test_predicates_and_errors() -> None:
    yolo = YOLO("yolov8n.yaml")
    assert is_ultralytics_model(yolo) and not is_ultralytics_model(yolo.model)
    assert is_ultralytics_network(yolo.model) and not is_ultralytics_network(yolo)
    with pytest.raises(TypeError, match="ultralytics Model"):
        swap_yolo(yolo.model)
    swap_yolo(yolo, "dysample", verbose=False)
    with pytest.raises(ValueError, match="already swapped"):
        swap_yolo(yolo, "dysample+")
    assert swap_upsamplers(yolo, "dysample") is yolo  # the YOLO object goes to swap_yolo: re-attaches only
    hooks = [c for c in yolo.callbacks["on_pretrain_routine_start"] if isinstance(c, KeepSwapInTraining)]
    assert len(hooks) == 1 and swap_report(yolo.model).previous is None  # one callback, one swap
    assert hooks[0].swaps == swap_record(yolo.model)["swaps"]  # it replays the model's one swap record
    assert [path for path, _ in hooks[0].swaps[0]["sites"]] == [d.path for d in swap_report(yolo.model).swapped]
    with pytest.warns(UserWarning, match=r"YOLO.train\(\) rebuilds the network .* pass the YOLO object itself"):
        swap_upsamplers(YOLO("yolov8n.yaml").model, "dysample", verbose=False)  # the network alone: said


def test_swap_is_in_place_and_changes_nothing_at_swap_time() -> None:
    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    network = yolo.model.eval()
    inputs = [torch.rand(1, 3, IMAGE, IMAGE), torch.rand(2, 3, 96, 160)]
    with torch.no_grad():
        before = [network(x)[0] for x in inputs]
    bookkeeping = layer_bookkeeping(network)
    swap_yolo(yolo, verbose=False)
    assert sorted(dysamples(network)) == [f"model.{i}" for i in UPSAMPLE_LAYERS]
    assert layer_bookkeeping(network) == bookkeeping  # ultralytics' _predict_once reads .f and .i
    assert [n for n, _ in network.named_children()] == ["model"]  # no module added beside the layer list
    with torch.no_grad():
        for x, y in zip(inputs, before):
            torch.testing.assert_close(network(x)[0], y, rtol=1e-5, atol=1e-4)


def test_training_trains_the_swapped_network(run: Run) -> None:
    seen = run.seen
    expected = [f"model.{i}" for i in UPSAMPLE_LAYERS]
    assert seen.model_dysamples == expected and seen.ema_dysamples == expected
    assert seen.bookkeeping == run.bookkeeping
    assert seen.in_optimizer and all(seen.in_optimizer.values()), seen.in_optimizer
    assert all(g > 0 for g in seen.grads.values()), seen.grads  # every DySample tensor got a gradient
    moved = [k for k, v in seen.ema_saved.items() if k in seen.grads and not torch.equal(v, seen.start_state[k])]
    assert moved, "the EMA's DySample parameters did not change during training"


def test_checkpoints_reload_with_the_trained_dysample(run: Run) -> None:
    unswapped = DetectionModel(copy.deepcopy(run.yolo.model.yaml), nc=2, verbose=False)
    for path in (run.last, run.best):
        network = YOLO(str(path)).model
        assert sorted(dysamples(network)) == [f"model.{i}" for i in UPSAMPLE_LAYERS]
        assert layer_bookkeeping(network) == run.bookkeeping
        state = dysample_state(network)
        assert state.keys() == run.seen.ema_saved.keys()
        for key, value in run.seen.ema_saved.items():  # checkpoints hold the EMA in float16
            torch.testing.assert_close(state[key], value.half().float(), rtol=0, atol=0)
        count = sum(p.numel() for p in network.parameters())
        dysample_count = sum(p.numel() for m in dysamples(network).values() for p in m.parameters())
        assert count - sum(p.numel() for p in unswapped.parameters()) == dysample_count == run.parameters_added
    assert sorted(dysamples(run.yolo.model)) == [f"model.{i}" for i in UPSAMPLE_LAYERS]  # train() reloaded best.pt


def test_val_predict_and_onnx_export(run: Run) -> None:
    yolo = YOLO(str(run.best))
    metrics = yolo.val(
        data=str(run.data),
        imgsz=IMAGE,
        batch=4,
        device="cpu",
        workers=0,
        plots=False,
        project=str(run.out / "runs"),
        name="val",
        exist_ok=True,
        verbose=False,
    )
    assert 0.0 <= metrics.box.map <= 1.0
    calls: list[str] = []
    for name, module in dysamples(yolo.model).items():
        module.register_forward_hook(lambda m, args, out, name=name: calls.append(name))
    results = yolo.predict(str(run.image), imgsz=IMAGE, device="cpu", verbose=False)
    assert len(results) == 1 and results[0].orig_shape == (IMAGE, IMAGE)
    assert f"model.{UPSAMPLE_LAYERS[0]}" in calls and f"model.{UPSAMPLE_LAYERS[1]}" in calls  # predict ran DySample

    path = yolo.export(format="onnx", imgsz=IMAGE, simplify=False, device="cpu")
    # unswapped, YOLOv8n exports its two nn.Upsample layers as ONNX Resize nodes
    assert "Resize" not in {node.op_type for node in onnx.load(path).graph.node}
    x = torch.rand(1, 3, IMAGE, IMAGE)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_out = yolo.model.eval()(x)[0]
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-4, atol=1e-4)


FRESH_PROCESS = """
import sys, torch
network = torch.load(sys.argv[1], weights_only=False)
print(sorted(type(m).__name__ for m in network.modules() if type(m).__name__ == "DySample"))
with torch.no_grad():
    torch.save(network(torch.load(sys.argv[2]))[0], sys.argv[3])
"""


def test_pickle_copy_and_fresh_process_round_trips(run: Run, tmp_path: Path) -> None:
    network = YOLO(str(run.best)).model.eval()
    x = torch.rand(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        expected = network(x)[0]
        for other in (pickle.loads(pickle.dumps(network)), copy.copy(network), copy.deepcopy(network)):
            assert sorted(dysamples(other)) == sorted(dysamples(network))
            assert torch.equal(other(x)[0], expected)
    torch.save(network, tmp_path / "network.pt")
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(tmp_path / "network.pt"),
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.pt"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['DySample', 'DySample']"
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_training_a_swapped_checkpoint_carries_its_dysample_weights(run: Run) -> None:
    yolo = swap_yolo(YOLO(str(run.last)))  # already swapped: attaches the recorded swap, swaps nothing again
    assert swap_report(yolo.model).variant == "dysample+"
    checkpoint = dysample_state(yolo.model)
    seen = inspect_training(yolo)
    yolo.train(data=str(run.data), project=str(run.out / "runs"), name="again", **TRAIN_ARGS)
    assert seen.model_dysamples == [f"model.{i}" for i in UPSAMPLE_LAYERS]
    assert seen.start_state.keys() == checkpoint.keys()
    for key, value in checkpoint.items():
        assert torch.equal(seen.start_state[key], value), key


@pytest.mark.slow
def test_compile_matches_eager_at_three_sizes() -> None:
    """``torch.compile(fullgraph=True)`` of the swapped network equals eager at three input sizes.

    ultralytics' ``Detect`` head builds its anchors with a data-dependent ``new_full(..., stride)``
    whenever the input size changes, so no YOLO network, swapped or not, compiles as one graph from
    cold. Each size is therefore run eagerly first, as ultralytics' own predictor warm-up does, and
    the compiled call finds the anchors cached; the unswapped network compiles with ``fullgraph=True``
    the same way. The ``aot_eager`` backend (dynamo capture plus AOTAutograd) keeps this at about a
    minute of CPU; inductor's code generation for all of YOLOv8n takes minutes per size on a small CPU.
    """
    torch.manual_seed(0)
    yolo = swap_yolo(YOLO("yolov8n.yaml"), verbose=False)
    network = yolo.model.eval()
    for module in dysamples(network).values():  # non-zero offsets, so the sampling itself is compared
        nn.init.normal_(module.offset.weight, std=0.01)
    compiled = torch.compile(network, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for size in ((64, 64), (96, 96), (64, 128)):
            x = torch.rand(1, 3, *size)
            eager = network(x)[0]
            torch.testing.assert_close(compiled(x)[0], eager, rtol=1e-4, atol=1e-4)


def test_a_guided_upsampler_trains_through_yolo_train_and_reloads(tmp_path: Path) -> None:
    """FADE gets its guide (the backbone feature the neck concatenates) through ultralytics' own ``.f`` wiring."""
    data = write_dataset(tmp_path / "data")
    yolo = YOLO("yolov8n.yaml")
    swap_yolo(yolo, "fade", verbose=False)
    report = swap_report(yolo.model)
    assert [(d.path, d.method, d.guide_producer) for d in report.swapped] == [
        ("model.10", "in place", "model.6"),
        ("model.13", "in place", "model.4"),
    ]
    layers = {i: yolo.model.model[i] for i in UPSAMPLE_LAYERS}
    assert [(layer.f, layer.i, type(layer.upsampler).__name__) for layer in layers.values()] == [
        ([-1, 6], 10, "FADE"),
        ([-1, 4], 13, "FADE"),
    ]
    before = {k: v.clone() for k, v in yolo.model.state_dict().items() if ".upsampler." in k}
    yolo.train(data=str(data), project=str(tmp_path / "runs"), name="train", **TRAIN_ARGS)
    last = YOLO(str(tmp_path / "runs" / "train" / "weights" / "last.pt")).model
    trained = {k: v for k, v in last.state_dict().items() if ".upsampler." in k}
    assert trained.keys() == before.keys() and trained
    assert any(not torch.equal(trained[k].float(), before[k].float()) for k in trained)  # FADE was trained
    with torch.no_grad():
        assert last.eval()(torch.rand(1, 3, IMAGE, IMAGE))[0].isfinite().all()
    reloaded = YOLO(str(tmp_path / "runs" / "train" / "weights" / "last.pt"))
    with pytest.warns(UserWarning, match="FADE: a traced graph"):  # ultralytics' export traces at imgsz
        path = reloaded.export(format="onnx", imgsz=IMAGE, simplify=False, device="cpu")
    x = torch.rand(1, 3, IMAGE, IMAGE)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch_out = reloaded.model.eval()(x)[0]
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), rtol=1e-4, atol=1e-4)
