"""EMG transforms with emg2qwerty's names and behaviour (docs/format.md#transforms).

Every transform is a dataclass, so Hydra instantiates it from ``_target_`` plus keyword
arguments. Shapes use T = time, B = band (2: left, right), C = electrode channel (16),
F = frequency bin.

Random draws follow emg2qwerty: the *number* of masks, band-rotation offsets and jitter offsets
come from numpy's global RNG, mask positions and widths from torch's RNG. Lightning's
``seed_everything(..., workers=True)`` seeds both per DataLoader worker.

torchaudio is deliberately not used (docs/format.md#pitfalls: it is a heavy import that raw-input
models never need); the spectrogram and masks are a few lines of ``torch.stft`` and tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "Compose",
    "ForEach",
    "Lambda",
    "LogSpectrogram",
    "RandomBandRotation",
    "SpecAugment",
    "TemporalAlignmentJitter",
    "ToTensor",
]


def _as_object(value: Any) -> Any:
    """Undo OmegaConf's conversion of nested transforms into configs.

    With Hydra's default ``_convert_="none"``, instantiated dataclass transforms that are
    passed on inside a list or as an argument come back as DictConfig/ListConfig copies of
    their fields; ``OmegaConf.to_object`` turns them back into the dataclass instances.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_object(value)
    return value


@dataclass
class ToTensor:
    """Structured numpy rows -> tensor: stacks ``fields`` on a new dimension ``stack_dim``.

    With the defaults, rows of shape (T,) with fields ``emg_left``/``emg_right`` of shape (16,)
    become a (T, 2, 16) tensor with the fields' dtype (float32 in real files).
    """

    fields: Sequence[str] = ("emg_left", "emg_right")
    stack_dim: int = 1

    def __call__(self, data: np.ndarray) -> torch.Tensor:
        return torch.stack([torch.as_tensor(data[f]) for f in self.fields], dim=self.stack_dim)


@dataclass
class Lambda:
    """Wraps a plain callable so it can sit in a :class:`Compose`."""

    lambd: Callable[[Any], Any]

    def __call__(self, data: Any) -> Any:
        return self.lambd(data)


@dataclass
class ForEach:
    """Applies ``transform`` separately to each slice along ``batch_dim`` and re-stacks.

    ``ForEach(RandomBandRotation(), batch_dim=1)`` on (T, 2, 16) rotates each band with its own
    random offset.
    """

    transform: Callable[[torch.Tensor], torch.Tensor]
    batch_dim: int = 0

    def __post_init__(self) -> None:
        self.transform = _as_object(self.transform)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [self.transform(t) for t in tensor.unbind(self.batch_dim)], dim=self.batch_dim
        )


@dataclass
class Compose:
    """Applies ``transforms`` in order."""

    transforms: Sequence[Callable[[Any], Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transforms = [_as_object(t) for t in _as_object(self.transforms)]

    def __call__(self, data: Any) -> Any:
        for transform in self.transforms:
            data = transform(data)
        return data


@dataclass
class RandomBandRotation:
    """Rolls the electrode axis circularly by an offset drawn from ``offsets``.

    Models the ±1 electrode shift of the band between sessions. Input (..., C) -> same shape.
    """

    offsets: Sequence[int] = (-1, 0, 1)
    channel_dim: int = -1

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        offset = int(np.random.choice(list(self.offsets))) if len(self.offsets) > 0 else 0
        return tensor.roll(offset, dims=self.channel_dim)


@dataclass
class TemporalAlignmentJitter:
    """Shifts the right band against the left by o ~ U{-max_offset..max_offset} samples.

    Input (T, 2, C) (bands on ``stack_dim``) -> (T - |o|, 2, C). For o > 0 the left band loses
    its first o samples and the right band its last o; o < 0 mirrors that.
    """

    max_offset: int = 120
    stack_dim: int = 1

    def __post_init__(self) -> None:
        if self.max_offset < 0:
            raise ValueError(
                f"TemporalAlignmentJitter: max_offset must be >= 0, got {self.max_offset}"
            )

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[self.stack_dim] != 2:
            raise ValueError(
                f"TemporalAlignmentJitter expects 2 bands on dim {self.stack_dim}, "
                f"got shape {tuple(tensor.shape)}"
            )
        left, right = tensor.unbind(self.stack_dim)
        offset = int(np.random.randint(-self.max_offset, self.max_offset + 1))
        if offset > 0:
            left, right = left[offset:], right[:-offset]
        elif offset < 0:
            left, right = left[:offset], right[-offset:]
        return torch.stack([left, right], dim=self.stack_dim)


@dataclass
class LogSpectrogram:
    """log10 power spectrogram per channel (emg2qwerty baseline front-end).

    Input (T, ...) -> (T', ..., F) with T' = ⌊(T - n_fft) / hop_length⌋ + 1 (no centre padding)
    and F = n_fft // 2 + 1; for (T, 2, 16) that is (T', 2, 16, 33) at 2000/16 = 125 Hz.
    Periodic Hann window; the complex STFT is divided by sqrt(Σ w²) ("window" normalisation,
    which is what torchaudio's ``normalized=True`` does, unlike ``torch.stft(normalized=True)``
    which divides by sqrt(n_fft)); output log10(|X|² + 1e-6).
    """

    n_fft: int = 64
    hop_length: int = 16

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[0] < self.n_fft:
            raise ValueError(
                f"LogSpectrogram: input has {tensor.shape[0]} samples, "
                f"fewer than n_fft={self.n_fft}"
            )
        x = tensor.movedim(0, -1)  # (..., T)
        lead_shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        if not x.is_floating_point():
            x = x.float()
        window = torch.hann_window(self.n_fft, periodic=True, dtype=x.dtype, device=x.device)
        stft = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (N, F, T')
        power = (stft / window.pow(2).sum().sqrt()).abs().pow(2)
        logspec = torch.log10(power + 1e-6)
        logspec = logspec.reshape(*lead_shape, *logspec.shape[-2:])  # (..., F, T')
        return logspec.movedim(-1, 0)  # (T', ..., F)


def _mask_along(
    x: torch.Tensor, mask_param: int, dim: int, iid: bool, value: float
) -> torch.Tensor:
    """One random mask of width ⌊U·mask_param⌋ along ``dim`` of x (..., F, T).

    Same sampling as torchaudio's ``mask_along_axis(_iid)``: width v = U·mask_param, start
    s = U·(size - v), masked positions [⌊s⌋, ⌊s + v⌋). With ``iid`` each index of the leading
    dimensions (band, channel) draws its own mask; otherwise one mask is shared.
    """
    size = x.shape[dim]
    lead = x.shape[:-2] if iid else ()
    width = torch.rand(lead, device=x.device) * mask_param
    start = torch.rand(lead, device=x.device) * (size - width)
    lo, hi = start.long(), (start + width).long()
    pos = torch.arange(size, device=x.device)
    mask = (pos >= lo[..., None]) & (pos < hi[..., None])  # (*lead, size)
    # Broadcast the mask over the other of the last two dims.
    mask = mask.unsqueeze(-1) if dim == x.ndim - 2 else mask.unsqueeze(-2)
    return x.masked_fill(mask, value)


@dataclass
class SpecAugment:
    """Time and frequency masking of a spectrogram (T', ..., F) -> same shape.

    Draws n ~ U{0..n_time_masks} time masks, each up to ``time_mask_param`` frames wide, and
    n ~ U{0..n_freq_masks} frequency masks up to ``freq_mask_param`` bins wide; masked cells
    are set to ``mask_value``. With ``iid_*_masks`` every band/channel (every index of the
    dimensions between time and frequency) gets its own masks.
    """

    n_time_masks: int = 0
    time_mask_param: int = 0
    iid_time_masks: bool = True
    n_freq_masks: int = 0
    freq_mask_param: int = 0
    iid_freq_masks: bool = True
    mask_value: float = 0.0

    def __call__(self, specgram: torch.Tensor) -> torch.Tensor:
        x = specgram.movedim(0, -1)  # (..., F, T')
        for _ in range(int(np.random.randint(self.n_time_masks + 1))):
            x = _mask_along(
                x, self.time_mask_param, x.ndim - 1, self.iid_time_masks, self.mask_value
            )
        for _ in range(int(np.random.randint(self.n_freq_masks + 1))):
            x = _mask_along(
                x, self.freq_mask_param, x.ndim - 2, self.iid_freq_masks, self.mask_value
            )
        return x.movedim(-1, 0)
