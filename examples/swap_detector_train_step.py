"""Swap the FPN upsampling of a torchvision Faster R-CNN for DySample and train one step (CPU).

    python examples/swap_detector_train_step.py

Builds ``fasterrcnn_resnet50_fpn`` with random weights (nothing is downloaded) at a small input
size, swaps its FPN's top-down upsampling for DySample+, checks that the swap left the
detector's output unchanged (zero-initialised offsets anchored on the original nearest
interpolation), then takes one SGD step on two synthetic images and prints the gradients the
new DySample parameters received.
"""

from __future__ import annotations

import torch

from dysample_swap.finetune.data import build_dataset
from dysample_swap.surgery.model_spec import build_model
from dysample_swap.surgery.swap import swap_report, swap_upsamplers


def main() -> None:
    torch.manual_seed(0)
    data = build_dataset({"format": "synthetic", "task": "detection", "image_size": 96, "num_samples": 2}, "train")
    images, targets = zip(*(data[i] for i in range(2)))
    model = build_model(
        f"torchvision:fasterrcnn_resnet50_fpn:min_size=96,max_size=96,num_classes={data.num_classes}"
    ).eval()
    with torch.no_grad():
        before = model([images[0]])[0]["boxes"]
    model = swap_upsamplers(model, "dysample+", example_inputs=[images[0]])
    with torch.no_grad():
        after = model([images[0]])[0]["boxes"]
    print(
        f"swapped {len(swap_report(model).swapped)} sites; detections unchanged by the swap: "
        f"{torch.allclose(before, after, atol=1e-4)}"
    )

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4)
    losses = model(list(images), list(targets))
    loss = sum(losses.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print("losses:", {k: round(v.item(), 4) for k, v in losses.items()})
    for name, param in model.named_parameters():
        if name.endswith(("offset.weight", "scope.weight")):
            print(f"  {name}: |grad| = {param.grad.abs().sum().item():.3g}")
    # offset.weight gets a gradient at once; scope.weight multiplies the (zero) initial offsets,
    # so its gradient is exactly zero until the offsets have moved away from zero.


if __name__ == "__main__":
    main()
