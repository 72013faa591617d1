"""Generator parameters (the difficulty knobs) and dataset-size presets.

Every number below cites where it comes from; "SE" is
``docs/synthetic-evidence.md`` (its section and table). Knobs marked
**difficulty** change how hard the decoding problem is; they are the ones to tune if larger
models should buy lower CER (see docs/synthetic.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GeneratorParams", "DatasetConfig", "DEMO_PARAMS", "PRESETS", "preset_config"]


@dataclass(frozen=True)
class GeneratorParams:
    """All knobs of the signal and typing model, with their sources.

    Amplitudes are in microvolts (the HDF5 unit is undocumented, SE §7; we pick µV so one
    motor unit is ~10 units peak-to-peak, SE §2 "MUAP shape").
    """

    # ------------------------------------------------------------ recording chain
    sample_rate_hz: float = 2000.0  # SE summary table "sampling rate"
    highpass_hz: float = 40.0  # digital high-pass of the released files, SE §1
    lowpass_hz: float = 850.0  # analogue band 20-850 Hz, SE §1
    mains_hz: float = 60.0  # PowerLineFrequency 60, SE §1

    # ------------------------------------------------------------ motor units
    mus_per_source: int = 24  # low-threshold units that typing recruits (SE §2 "typing force")
    muap_uv: float = 10.0  # single-MU peak-to-peak at the wrist, SE §2
    muap_ms: tuple[float, float] = (5.0, 15.0)  # MUAP duration range, SE §2 "MUAP shape"
    mu_spread_electrodes: float = 1.3  # **difficulty** sd of a MU footprint (3-8 ch, SE §2)
    firing_hz: tuple[float, float] = (20.0, 40.0)  # burst firing rate, SE §2 "typing force"
    isi_cv: float = 0.15  # ISI coefficient of variation 0.1-0.2, SE §2

    # ------------------------------------------------------------ keystroke-locked bursts
    # Three-burst model of SE §3 "Recommended burst model" (Dennerlein et al. 1998).
    lift_ms: float = -120.0  # extensor lift burst centre, relative to key-down
    press_ms: float = -50.0  # flexor press burst centre (ends near key-down)
    release_ms: float = -20.0  # extensor release burst centre, relative to key-up
    burst_amplitudes: tuple[float, float, float] = (0.6, 1.0, 0.45)  # lift, press, release
    burst_sd_ms: float = 12.0  # **difficulty** spread of first spikes in a burst (burst overlap)
    latency_jitter_ms: float = 12.0  # sd of per-user latency shifts: +-20-30 ms range, SE §3
    keystroke_force_sigma: float = 0.25  # log-sd of per-keystroke effort (assumption)
    # **difficulty** log-sd of each unit's per-keystroke drive: 0 = deterministic recruitment
    # (size principle), large = units fire at random.
    recruitment_noise: float = 0.3
    # **difficulty**: 1 = all keys of one finger recruit the same units (only the row/lateral
    # posture term tells them apart); 0 = each key recruits its own random subset.
    same_finger_similarity: float = 0.3
    posture_weight: float = 0.8  # **difficulty** strength of the row/lateral reach sources
    neighbour_finger_leak: float = 0.5  # co-activation of neighbouring fingers, SE §2 crosstalk
    other_hand_leak: float = 0.4  # preparatory activity of the idle hand, SE §3 (Fig. 1)
    tonic_hz: float = 6.0  # wrist co-contraction firing at typical speed, SE §3

    # ------------------------------------------------------------ users (anatomy)
    # **difficulty** scales per-user differences (band placement, source positions, widths,
    # latencies, user-specific key recruitment); see emg.sample_anatomy.
    user_variability: float = 1.0
    user_source_shift_sd: float = 1.5  # sd of per-user source centre shifts (electrodes)
    user_rotation_sd: float = 1.0  # per-user band placement vs anatomy (electrodes)
    user_scale_range: tuple[float, float] = (0.5, 2.0)  # per-user overall scale, SE §4
    finger_remap_prob: float = 0.3  # chance per user that b/y move to the other index, SE §3

    # ------------------------------------------------------------ sessions (donning)
    # Whole-electrode band rotation 0 / +-1, SE §4 "Rotation" (Meta's augmentation range).
    rotation_probs: tuple[float, float, float] = (0.25, 0.5, 0.25)  # offsets -1, 0, +1
    rotation_frac_sd: float = 0.15  # fractional part of the rotation (electrodes)
    session_gain_sigma: float = 0.3  # **difficulty** lognormal channel gain, SE §4 (0.2-0.4)
    drift_sigma: float = 0.1  # slow within-session amplitude drift (fatigue, SE §2)
    drift_knot_s: float = 20.0  # time between drift knots
    noise_uv: float = 1.2  # **difficulty** white noise rms per channel (assumption, SE §1)
    noise_session_sigma: float = 0.3  # log-sd of the session noise level
    noisy_channel_prob: float = 0.2  # chance of one poorly contacting channel per band
    mains_uv: float = 1.5  # median 60 Hz amplitude; lognormal across sessions
    mains_session_sigma: float = 1.0  # so it is visible in some sessions only, SE §6 checks

    # ------------------------------------------------------------ typing (SE §5)
    iki_within_word: tuple[float, float] = (-1.92, 0.59)  # ln-IKI mu, sigma (147 ms)
    iki_word_initial: tuple[float, float] = (-1.50, 0.62)  # space -> first letter (223 ms)
    iki_before_enter: tuple[float, float] = (-1.25, 0.66)  # letter -> Enter (287 ms)
    iki_before_space: tuple[float, float] = (-2.00, 0.50)  # letter -> space (135 ms)
    user_speed_sigma: float = 0.22  # per-user median IKI 90-300 ms
    hold_median_ms: float = 82.0  # true hold; logged (15 ms grid) median ~90 ms, SE §5
    hold_sigma: float = 0.36
    user_hold_sigma: float = 0.2  # per-user hold medians 60-165 ms
    error_rate: float = 0.034  # per intended char; gives ~4.3% backspaces (SE §5 errors)
    user_error_sigma: float = 0.6  # per user 0.9-12% backspaces
    uncorrected_prob: float = 0.2  # ~1.4% residual errors vs 4.7% deleted chars
    prompt_to_first_key_s: float = 0.71  # median, SE §1 "Session timing"
    enter_to_next_prompt_s: float = 0.10  # so Enter -> next first key is ~0.81 s
    key_grid_ms: float = 15.0  # keylogger time grid, SE §1
    key_grid_on_prob: float = 0.9  # so ~82% of IKIs land on the grid (0.9^2)

    def __post_init__(self) -> None:
        if len(self.rotation_probs) != 3 or abs(sum(self.rotation_probs) - 1) > 1e-6:
            raise ValueError(f"rotation_probs must be 3 probabilities, got {self.rotation_probs}")
        for name in ("same_finger_similarity", "uncorrected_prob", "key_grid_on_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GeneratorParams.{name} must lie in [0, 1], got {value}")
        if self.mus_per_source < 1:
            raise ValueError(f"mus_per_source must be >= 1, got {self.mus_per_source}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> GeneratorParams:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class DatasetConfig:
    """How many users/sessions to write and how the splits are drawn.

    Users 0..n_heldout-1 are the held-out (personalized) users, mirroring emg2qwerty's
    choice of the users with the most sessions (docs/format.md#splits).
    """

    n_users: int
    n_heldout: int
    sessions_per_user: int  # generic-pool users
    heldout_sessions: int  # held-out users
    session_seconds: float
    params: GeneratorParams = field(default_factory=GeneratorParams)
    text_file: str | None = None

    def __post_init__(self) -> None:
        if self.n_heldout < 1 or self.n_users <= self.n_heldout:
            raise ValueError(
                f"need n_users > n_heldout >= 1 (a generic pool and held-out users), "
                f"got n_users={self.n_users}, n_heldout={self.n_heldout}"
            )
        if self.heldout_sessions < 4:
            raise ValueError(
                f"held-out users need >= 4 sessions (train, val, test), got {self.heldout_sessions}"
            )
        if self.sessions_per_user < 2:
            raise ValueError(f"sessions_per_user must be >= 2, got {self.sessions_per_user}")
        if self.session_seconds < 5:
            raise ValueError(f"session_seconds must be >= 5, got {self.session_seconds}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["params"] = self.params.to_dict()
        return d

    def digest(self) -> str:
        """Stable hash of everything that changes the generated bytes."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The `demo` preset's difficulty: the physiological defaults above make a task that
# TC_S4_small cannot start to learn within minutes of CPU (CTC stays on its all-blank plateau:
# greedy CER 100% after 1200 steps; linear keystroke probe 0.54). This set keeps every
# ingredient of the real problem (three keystroke-locked bursts, per-key spatial signatures
# from finger and posture sources, per-user anatomy, session gains/noise/drift/mains/rotation)
# but makes each key's signature cleaner and more distinct: each key recruits its own units
# (same_finger_similarity 0), reproducibly (recruitment_noise, force sigma), with stronger
# posture sources, narrower footprints, tighter bursts, less crosstalk and background
# (neighbour/other-hand leak, tonic, noise) and milder session effects. Measured in
# docs/synthetic.md (linear probe 0.544 -> 0.755 personalized).
DEMO_PARAMS = GeneratorParams(
    same_finger_similarity=0.0,
    recruitment_noise=0.1,
    keystroke_force_sigma=0.1,
    posture_weight=1.5,
    mu_spread_electrodes=1.0,
    burst_sd_ms=6.0,
    neighbour_finger_leak=0.2,
    other_hand_leak=0.1,
    tonic_hz=2.0,
    noise_uv=0.5,
    session_gain_sigma=0.15,
    rotation_probs=(0.05, 0.9, 0.05),
)

# Sizes. tiny: tests (seconds). demo: `make demo` (a held-out user with 8 train sessions of
# 2 min, plus a small generic pool). full: emg2qwerty-like split shape (8 held-out users),
# 5-min sessions; ~19 h of EMG, ~19 GB.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        n_users=4, n_heldout=2, sessions_per_user=4, heldout_sessions=4, session_seconds=20.0
    ),
    "demo": dict(
        n_users=6,
        n_heldout=2,
        sessions_per_user=5,
        # 16 train sessions (32 min) for the demo user: ~120 updates of 8 x 2 s windows per
        # epoch, so a short run gets past CTC's blank plateau and still sees varied data.
        heldout_sessions=20,
        session_seconds=120.0,
        params=DEMO_PARAMS,
    ),
    "full": dict(
        n_users=24, n_heldout=8, sessions_per_user=8, heldout_sessions=12, session_seconds=300.0
    ),
}


def preset_config(name: str, **overrides: Any) -> DatasetConfig:
    """The preset ``name`` with ``overrides`` (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(PRESETS)}")
    kwargs = dict(PRESETS[name])
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return DatasetConfig(**kwargs)
