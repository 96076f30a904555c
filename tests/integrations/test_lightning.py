"""PyTorch Lightning: a LightningModule that swaps its network in ``__init__`` trains with ``Trainer.fit``,
and ``load_from_checkpoint`` gives back the trained DySample weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from dysample_swap import DySample, swap_upsamplers


class SegModule(L.LightningModule):
    """The recipe from the docs: build the network, swap it, keep the hyper-parameters for reloading."""

    def __init__(self, variant: str = "dysample+", lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=2)
        self.net = swap_upsamplers(net, variant, (torch.rand(1, 3, 64, 64),), verbose=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, masks = batch
        return F.cross_entropy(self(images), masks)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def _dysample_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.detach().clone()
        for name, m in module.named_modules()
        if isinstance(m, DySample)
        for key, value in m.state_dict().items()
    }


@pytest.mark.slow
def test_trainer_fit_then_load_from_checkpoint_keeps_the_trained_dysample_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.rand(8, 3, 64, 64)
    masks = (images.mean(1) > 0.5).long()
    loader = DataLoader(TensorDataset(images, masks), batch_size=4)
    module = SegModule()
    before = _dysample_state(module)
    assert before, "the swap built no DySample"
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    trained = _dysample_state(module)
    assert any(not torch.equal(before[k], trained[k]) for k in before), "DySample weights did not train"

    checkpoint = next((tmp_path / "checkpoints").glob("*.ckpt"))
    reloaded = SegModule.load_from_checkpoint(checkpoint)  # __init__ swaps again; the state dict loads strictly
    again = _dysample_state(reloaded)
    assert again.keys() == trained.keys()
    assert all(torch.equal(again[k], trained[k]) for k in trained)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(reloaded.eval()(x), module.eval()(x))
