"""The Lightning module: CTC training of an :class:`EMGModel`, greedy/beam CER validation.

- Loss: ``nn.CTCLoss(blank=98, zero_infinity=True)``, mean reduction
  (docs/recipe.md#emission-lengths-and-loss), on the model's log-probs ``(T', N, 99)`` with
  ``emission_lengths = model.emission_lengths(...)``.
- Optimizer: ``model.param_groups(lr)`` (the S4D group at its own lr, weight decay 0) into the
  configured optimizer; the configured scheduler, stepped per epoch (docs/recipe.md).
- Non-finite steps: a batch whose loss or any gradient is NaN/Inf does not change the model.
  Its gradients are dropped before the optimizer step (``on_before_optimizer_step``), the
  BatchNorm running statistics its forward pass touched are restored, and it is counted in
  ``train/skipped_steps``. Under DDP the gradients are already all-reduced at that point, so
  every rank sees the same non-finite values and skips together.
- Validation: ``val`` (4 s windows, ``val/CER``...) and ``val_continuous`` (80 s chunks,
  ``val_continuous/CER``...); each loader has its own :class:`CharacterErrorRates`.
- Decoding and scoring go through :mod:`emg2qwerty_ssm.scoring`, the same path as the final
  evaluation of a split.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.decoding.base import BatchDecoder
from emg2qwerty_ssm.metrics import CharacterErrorRates
from emg2qwerty_ssm.models.activity import activity_metrics, regularization_loss
from emg2qwerty_ssm.models.model import EMGModel
from emg2qwerty_ssm.scoring import compute_cer, decode_and_score, default_decoder

__all__ = ["CHECKPOINT_MARKER", "VAL_STREAMS", "EMGModule"]

log = logging.getLogger(__name__)

VAL_STREAMS = ("val", "val_continuous")
#: extra checkpoint entry of this module: format version, model config, skipped-step count
CHECKPOINT_MARKER = "emg2qwerty_ssm"


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


class EMGModule(pl.LightningModule):
    """CTC training of an EMG-to-text model.

    Args:
        model_cfg: the ``model`` config node (plain dict); stored in the checkpoint so the
            architecture can be rebuilt.
        optimizer: optimizer config (``_target_`` + kwargs; ``lr`` is the base lr).
        lr_scheduler: ``{scheduler: {_target_, _partial_: true, ...}, interval: epoch}``.
        decoder: decoder config (``_target_`` + kwargs).
        model: an already built model (loaded checkpoint); default: ``build_model(model_cfg)``.
    """

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_scheduler: Mapping[str, Any] | None = None,
        decoder: Mapping[str, Any] | None = None,
        model: EMGModel | None = None,
    ) -> None:
        super().__init__()
        # Plain containers only: checkpoints stay loadable with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "model_cfg": _plain(model_cfg),
                "optimizer": _plain(optimizer),
                "lr_scheduler": _plain(lr_scheduler),
                "decoder": _plain(decoder),
            }
        )
        if model is None:
            from emg2qwerty_ssm.models import build_model

            model = build_model(OmegaConf.create(self.hparams["model_cfg"]))
        self.model: EMGModel = model
        self.ctc_loss = nn.CTCLoss(blank=charset().null_class, zero_infinity=True)
        self.decoder: BatchDecoder = (
            instantiate(self.hparams["decoder"]) if decoder else default_decoder()
        )
        # Keys get a suffix: "train" would clash with nn.Module.train in a ModuleDict.
        self.metrics = nn.ModuleDict(
            {f"{name}_cer": CharacterErrorRates() for name in ("train", *VAL_STREAMS)}
        )
        self.skipped_steps = 0  # non-finite training steps skipped (kept in checkpoints)
        self._skip_this_step = False
        self._buffers_before_step: list[torch.Tensor] | None = None

    def _cer(self, stream: str) -> CharacterErrorRates:
        """The CharacterErrorRates of ``train``, ``val`` or ``val_continuous``."""
        return self.metrics[f"{stream}_cer"]  # type: ignore[return-value]

    # ------------------------------------------------------------------ forward / loss
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def _step(
        self, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs = batch["inputs"]
        emissions = self.model(inputs)  # (T', N, 99)
        emission_lengths = self.model.emission_lengths(batch["input_lengths"]).to(emissions.device)
        # Padding frames beyond an item's length never enter the loss; lengths past the
        # emitted frames (cannot happen for kernel = stride stages) are clamped to be safe.
        emission_lengths = emission_lengths.clamp(max=emissions.shape[0])
        loss = self.ctc_loss(
            emissions.float(),
            batch["targets"].transpose(0, 1).long(),
            emission_lengths,
            batch["target_lengths"].long(),
        )
        return loss, emissions, emission_lengths

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # BatchNorm running stats change in the forward pass; keep a copy to undo a bad step.
        self._buffers_before_step = [b.detach().clone() for b in self.model.buffers()]
        loss, emissions, emission_lengths = self._step(batch)
        batch_size = int(batch["inputs"].shape[1])
        # Activity regularisers of event-based stages (the SNN's sparsity_spiking_activity).
        activity_loss = regularization_loss(self.model)
        if activity_loss is not None:
            self.log("train/activity_loss", activity_loss, batch_size=batch_size, sync_dist=True)
            loss = loss + activity_loss
        self.log_dict(_prefixed("train", activity_metrics(self.model)), batch_size=batch_size)
        self._skip_this_step = not bool(torch.isfinite(loss.detach()))
        if not self._skip_this_step:
            self.log("train/loss", loss, batch_size=batch_size, prog_bar=True, sync_dist=True)
            decode_and_score(
                self.decoder,
                self._cer("train"),
                emissions,
                emission_lengths,
                batch["targets"],
                batch["target_lengths"],
            )
        # A non-finite loss still goes through backward (so DDP's gradient all-reduce stays
        # in step across ranks); the resulting non-finite gradients are dropped below.
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        # One device sync for all parameters rather than one per tensor; each tensor's max
        # |g| (inf or NaN exactly when the tensor holds one) in one multi-tensor call.
        finite = not grads or bool(
            torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).all()
        )
        if finite and not self._skip_this_step:
            return
        # Parameters whose .grad is None are left untouched by torch optimizers (no moment
        # update either), so the step becomes a no-op for the model.
        for p in self.parameters():
            p.grad = None
        if self._buffers_before_step is not None:
            with torch.no_grad():
                for buf, saved in zip(self.model.buffers(), self._buffers_before_step, strict=True):
                    buf.copy_(saved)
        self.skipped_steps += 1
        log.warning(
            "non-finite %s at epoch %d step %d: optimizer step skipped (%d so far)",
            "loss" if self._skip_this_step else "gradient",
            self.current_epoch,
            self.global_step,
            self.skipped_steps,
        )

    def on_train_epoch_end(self) -> None:
        cer = compute_cer(self._cer("train"))
        if cer is not None:
            # torchmetrics already summed the counts over ranks, so every rank holds the same
            # value and sync_dist's mean is exact; it keeps Lightning's DDP bookkeeping quiet.
            self.log_dict({f"train/{k}": v for k, v in cer.items()}, sync_dist=True)
        self._cer("train").reset()
        self.log("train/skipped_steps", float(self.skipped_steps), sync_dist=True)

    # ------------------------------------------------------------------ validation
    def validation_step(
        self, batch: Mapping[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        stream = VAL_STREAMS[dataloader_idx]
        loss, emissions, emission_lengths = self._step(batch)
        spikes = _prefixed(stream, activity_metrics(self.model))  # per-layer spike fractions
        batch_size = int(batch["inputs"].shape[1])
        self.log_dict(spikes, batch_size=batch_size, sync_dist=True, add_dataloader_idx=False)
        self.log(
            f"{stream}/loss",
            loss,
            batch_size=batch_size,
            sync_dist=True,
            add_dataloader_idx=False,
        )
        decode_and_score(
            self.decoder,
            self._cer(stream),
            emissions,
            emission_lengths,
            batch["targets"],
            batch["target_lengths"],
        )

    def on_validation_epoch_end(self) -> None:
        for stream in VAL_STREAMS:
            cer = compute_cer(self._cer(stream))
            # An epoch without target characters has no CER (the seed skips logging too).
            if cer is not None:
                self.log_dict(
                    {f"{stream}/{k}": v for k, v in cer.items()},
                    sync_dist=True,
                    add_dataloader_idx=False,
                    prog_bar=False,
                )
            self._cer(stream).reset()

    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self) -> Any:
        opt_cfg = dict(self.hparams["optimizer"] or {"_target_": "torch.optim.Adam", "lr": 2.5e-3})
        base_lr = float(opt_cfg.get("lr", 1e-3))
        groups = self.model.param_groups(base_lr)
        optimizer_class = get_class(opt_cfg.pop("_target_"))
        accepts = inspect.signature(optimizer_class).parameters
        if "foreach" in accepts and not opt_cfg.get("fused"):  # torch refuses both at once
            # torch's multi-tensor update: the same floats as the per-tensor loop (torch's
            # default on CPU), in one call over all parameters instead of ~10 small
            # operators per parameter tensor (Adam on TC_S4_small's 98 tensors: ~1.5x faster)
            opt_cfg.setdefault("foreach", True)
        # Called directly (not hydra.instantiate) so the parameter groups are passed untouched.
        optimizer = optimizer_class(groups, **opt_cfg)
        sched_cfg = self.hparams["lr_scheduler"]
        if not sched_cfg or not sched_cfg.get("scheduler"):
            return optimizer
        scheduler = instantiate(sched_cfg["scheduler"])(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": sched_cfg.get("interval", "epoch"),
                "frequency": 1,
            },
        }

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_MARKER] = {
            "format": "lightning",
            "version": 1,
            "model_cfg": self.hparams["model_cfg"],
            "skipped_steps": int(self.skipped_steps),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        marker = checkpoint.get(CHECKPOINT_MARKER) or {}
        self.skipped_steps = int(marker.get("skipped_steps", 0))


def _prefixed(stream: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{stream}/{k}": v for k, v in metrics.items()}
