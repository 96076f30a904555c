"""Swap the decoder upsampling of an smp FPN for DySample, export to ONNX with dynamic height and
width, and check onnxruntime against PyTorch at a size other than the export size (CPU).

    python examples/swap_smp_export_onnx.py [OUT.onnx]

Needs the ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from dysample_swap.surgery.model_spec import build_model
from dysample_swap.surgery.swap import swap_report, swap_upsamplers


def main(path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("smp:FPN:encoder_name=resnet18,classes=3").eval()
    model = swap_upsamplers(
        model, "dysample+", example_inputs=torch.randn(1, 3, 128, 128), verbose=False, init="paper"
    )  # paper init: non-zero offsets
    print(f"swapped {len(swap_report(model).swapped)} upsampling sites")
    height, width = torch.export.Dim("height", min=1, max=64), torch.export.Dim("width", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # smp FPN needs sizes divisible by 32: export H = 32 * height, W = 32 * width.
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 128, 128),),
            str(path),
            dynamo=True,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({2: 32 * height, 3: 32 * width},),
            verbose=False,
        )
    session = onnxruntime.InferenceSession(str(path))
    for shape in ((1, 3, 128, 128), (1, 3, 96, 160)):
        x = torch.randn(*shape)
        (onnx_out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            torch_out = model(x).numpy()
        print(
            f"input {tuple(shape)}: onnxruntime {onnx_out.shape}, max |diff| vs PyTorch "
            f"{np.abs(onnx_out - torch_out).max():.2e}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "fpn_dysample.onnx")
