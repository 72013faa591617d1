"""Signal model: keystroke-locked motor-unit bursts on two 16-electrode wrist bands.

Follows the recommended generator of docs/synthetic-evidence.md ("SE") §6:

1. **Sources** (SE §3 "Muscles serving the fingers"): per hand, each finger has one extensor
   source on the dorsal electrodes and one flexor source on the palmar electrodes, plus four
   wrist-posture sources (reach up / down, radial / ulnar deviation) that make keys of one
   finger differ by row and column (Soechting & Flanders 1992). Neighbouring fingers' sources
   lie about one electrode apart, so their footprints overlap (SE §2 "spatial spread").
2. **Motor units** (SE §2): each source owns ``mus_per_source`` low-threshold units, each
   with a ring-shaped (Gaussian in circular electrode distance) footprint of ~3-8 channels,
   a Hermite-Rodriguez MUAP (orders 1-2 mixed, 5-15 ms, ~10 µV peak-to-peak, band-limited
   to roughly 20-450 Hz) and an amplitude growing with recruitment rank (size principle).
3. **Keystroke-locked drive** (SE §3 "Recommended burst model"): per keystroke an extensor
   lift burst (~-120 ms), a flexor press burst (~-40 ms) and an extensor release burst near
   key-up; each recruited unit fires 1-4 spikes at 20-40 Hz (ISI CV 0.15). Which units a key
   recruits is a per-user random modulation of its finger's pool (knob
   ``same_finger_similarity``) plus posture sources weighted by the key's row and lateral
   reach, plus leakage into neighbouring fingers and the idle hand. A low tonic
   co-contraction rises with typing speed.
4. **Users** differ in source positions, footprint widths, MUAP shapes, burst latencies
   (+-25 ms), recruitment patterns and overall scale (SE §4 "What the generator should
   reproduce"); **sessions** differ only in band rotation (0 / +-1 electrode plus a
   fractional part), per-channel lognormal gains, slow drift, noise level, a poorly
   contacting channel and 60 Hz mains amplitude (SE §4).
5. **Recording chain** (SE §1): 40 Hz high-pass and 850 Hz low-pass Butterworth filters,
   left band with reversed polarity (mirrored bands), float32 output in µV.

Spikes are rendered by scattering MUAP x footprint outer products with ``np.bincount``
(vectorised over all spikes), which is far cheaper than convolving dense spike trains
because typing activity is sparse (SE §6 "throughput").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import signal, sparse

from .keyboard import FINGERS, KEYS
from .params import GeneratorParams
from .typing import SessionTyping

__all__ = ["UserAnatomy", "SessionEffects", "sample_anatomy", "sample_session_effects", "render"]

N_ELECTRODES = 16
N_POSTURE = 4  # up, down, radial, ulnar
N_SOURCES = 2 * len(FINGERS) + N_POSTURE  # per hand
_TEMPLATE_LEN = 40  # samples (20 ms at 2 kHz) holds the longest 15 ms MUAP
# Source centres around the band in electrode units (0..16, circular): extensors on the
# dorsal electrodes ~1-7, flexors on the palmar ones ~9-15, gap near the ulna ~8
# (SE §1 "geometry around the wrist"). Order: (ext, flex) per finger, then posture.
_FINGER_CENTRES = {
    "thumb": (1.5, 14.8),
    "index": (3.0, 12.8),
    "middle": (4.0, 11.8),
    "ring": (5.0, 10.7),
    "little": (6.2, 9.9),  # FDP ring/little share a compartment: close flexor centres
}
_POSTURE_CENTRES = (3.5, 12.0, 0.5, 7.8)  # ECR (up), palmar (down), radial, ulnar
_POSTURE_WIDTH = 1.5  # posture muscles are broader than one finger's compartment
_BURSTS = 3  # lift, press, release


@dataclass
class UserAnatomy:
    """Per-user signal constants (fixed across that user's sessions).

    Arrays over motor units (M = 2 hands x N_SOURCES x mus_per_source): ``hand`` (M,),
    ``centre`` (M,) electrode units, ``width`` (M,), ``amp`` (M,) µV, ``template`` (M, L)
    unit peak-to-peak MUAPs, ``isi_s`` (M,). ``recruit`` (n_keys, 2 hands, 3 bursts, M):
    recruitment weight of each unit in each burst when key k is typed by hand h (a unit
    fires when weight x effort x trial noise > 0.5, see _keystroke_spikes).
    ``tonic`` (M,) bool: units firing tonically with typing speed. ``latency_s`` (3,).
    """

    hand: np.ndarray
    centre: np.ndarray
    width: np.ndarray
    amp: np.ndarray
    template: np.ndarray
    isi_s: np.ndarray
    recruit: np.ndarray
    tonic: np.ndarray
    latency_s: np.ndarray
    scale: float


@dataclass
class SessionEffects:
    """Per-session donning effects. ``rotation`` (2,) electrodes per band (integer part is
    what band-rotation augmentation undoes), ``gain`` (32,), ``noise_uv`` (32,),
    ``mains_uv`` (32,) and ``mains_phase`` (32,), ``drift`` (n_knots, 32)."""

    rotation: np.ndarray
    gain: np.ndarray
    noise_uv: np.ndarray
    mains_uv: np.ndarray
    mains_phase: np.ndarray
    drift: np.ndarray
    info: dict = field(default_factory=dict)


def _hermite_templates(
    rng: np.random.Generator, n: int, durations_ms: np.ndarray, fs: float
) -> np.ndarray:
    """(n, L) MUAPs: a mix of 1st/2nd-order Hermite-Rodriguez functions, p-p = 1."""
    t = (np.arange(_TEMPLATE_LEN) - _TEMPLATE_LEN / 2) / fs * 1000.0  # ms
    lam = (durations_ms / 5.0)[:, None]
    u = t[None, :] / lam
    env = np.exp(-(u**2))
    mix = rng.uniform(0, np.pi / 2, size=(n, 1))
    shape = np.cos(mix) * u * env + np.sin(mix) * (1 - 2 * u**2) * env
    shape -= shape.mean(axis=1, keepdims=True) * env / env.mean(axis=1, keepdims=True)
    shape /= np.ptp(shape, axis=1, keepdims=True)
    return shape * rng.choice([-1.0, 1.0], size=(n, 1))


def sample_anatomy(
    rng: np.random.Generator,
    p: GeneratorParams,
    key_remap: dict[str, int],
    population_rng: np.random.Generator | None = None,
) -> UserAnatomy:
    """Draw one user's sources, motor units and key recruitment patterns.

    ``population_rng`` (the same stream for every user of a dataset) draws the part of the
    key-specific recruitment that all users share (how a key is reached is similar across
    people). ``user_variability`` scales the per-user differences in band placement, source
    positions, footprint widths, burst latencies and the user-specific part of key
    recruitment (0: none, large: unrelated users); single motor units (exact position, MUAP
    shape, amplitude, firing rate) and the overall scale are always drawn per user.
    """
    uv = p.user_variability
    m = p.mus_per_source
    base = np.array([c for f in FINGERS for c in _FINGER_CENTRES[f]] + list(_POSTURE_CENTRES))
    widths = np.array([1.0] * (2 * len(FINGERS)) + [_POSTURE_WIDTH] * N_POSTURE)
    hands, centres, spreads = [], [], []
    for h in range(2):
        anatomy_rot = rng.normal(0.0, p.user_rotation_sd * uv)
        src = base + anatomy_rot + rng.normal(0.0, p.user_source_shift_sd * uv, base.shape)
        for s in range(N_SOURCES):
            hands.append(np.full(m, h))
            centres.append(src[s] + rng.normal(0.0, 0.5, m))
            spreads.append(
                p.mu_spread_electrodes * widths[s] * np.exp(rng.normal(0.0, 0.25 * uv, m))
            )
    hand = np.concatenate(hands)
    n_mu = hand.size
    rank = np.tile(np.arange(m), 2 * N_SOURCES)
    source = np.repeat(np.tile(np.arange(N_SOURCES), 2), m)
    amp = p.muap_uv * np.exp(0.12 * rank) * np.exp(rng.normal(0.0, 0.2, n_mu))
    dur_lo, dur_hi = p.muap_ms
    user_dur = rng.uniform(dur_lo + 2, dur_hi - 3)
    durations = np.clip(user_dur * np.exp(rng.normal(0.0, 0.25, n_mu)), dur_lo, dur_hi)
    template = _hermite_templates(rng, n_mu, durations, p.sample_rate_hz)
    isi = 1.0 / rng.uniform(*p.firing_hz, n_mu)

    # Recruitment: low-threshold units first (size principle), modulated per key.
    rank_weight = 0.9 * np.exp(-rank / (m / 2.5))
    key_spec = 1.5 * (1.0 - p.same_finger_similarity)
    recruit = np.zeros((len(KEYS), 2, _BURSTS, n_mu))
    population_rng = population_rng or np.random.default_rng(0)
    shared = population_rng.normal(0.0, 1.0, (len(KEYS), n_mu))
    posture_src = 2 * len(FINGERS) + np.arange(N_POSTURE)
    for k, key in enumerate(KEYS):
        mod = np.exp(key_spec * (shared[k] + uv * rng.normal(0.0, 1.0, n_mu)) / np.hypot(1, uv))
        finger = 1 if key.name in key_remap else key.finger
        for h in range(2):
            own = hand == h
            # Posture: reach up/down by row, radial/ulnar by column (mirrored per hand),
            # saturating so far reaches (Backspace: 2 rows up, 4 keys out) stay focal.
            toward_thumb = -key.lateral if h == 1 else key.lateral
            reach = np.array([-key.row, key.row, 0.5 * toward_thumb, -0.5 * toward_thumb])
            w_post = np.array([0.15, 0.15, 0.1, 0.1]) + np.clip(reach, 0.0, 1.0)
            for b, (src_kind, scale) in enumerate(((0, 1.0), (1, 1.0), (0, 0.6))):
                gain = np.zeros(N_SOURCES)
                gain[2 * finger + src_kind] = 1.0
                for nb in (finger - 1, finger + 1):
                    if 0 <= nb < len(FINGERS):
                        gain[2 * nb + src_kind] = p.neighbour_finger_leak
                gain[posture_src] = p.posture_weight * w_post * (1.0, 0.5, 0.3)[b]
                weight = rank_weight * mod * gain[source] * scale
                recruit[k, h, b] = np.where(own, weight, 0.0)
                # The idle hand: preparatory posture activity, mostly below threshold.
                idle = (~own) & (source >= 2 * len(FINGERS))
                recruit[k, h, b, idle] = p.other_hand_leak * rank_weight[idle]
    np.clip(recruit, 0.0, 0.97, out=recruit)
    tonic = (source >= 2 * len(FINGERS)) & (rank < 2)
    latency = np.array([p.lift_ms, p.press_ms, p.release_ms]) / 1000.0
    latency += rng.normal(0.0, p.latency_jitter_ms / 1000.0 * uv, 3)
    lo, hi = np.log(p.user_scale_range)
    return UserAnatomy(
        hand=hand,
        centre=np.concatenate(centres),
        width=np.concatenate(spreads),
        amp=amp,
        template=template,
        isi_s=isi,
        recruit=recruit,
        tonic=tonic,
        latency_s=latency,
        scale=float(np.exp(rng.uniform(lo, hi))),
    )


def sample_session_effects(
    rng: np.random.Generator, p: GeneratorParams, duration_s: float
) -> SessionEffects:
    n_ch = 2 * N_ELECTRODES
    offsets = rng.choice([-1, 0, 1], size=2, p=list(p.rotation_probs))
    rotation = offsets + rng.normal(0.0, p.rotation_frac_sd, 2)
    gain = np.exp(rng.normal(0.0, p.session_gain_sigma, n_ch))
    noise = p.noise_uv * np.exp(rng.normal(0.0, p.noise_session_sigma))
    noise_ch = noise * np.exp(rng.normal(0.0, 0.2, n_ch))
    for band in range(2):
        if rng.random() < p.noisy_channel_prob:
            noise_ch[band * N_ELECTRODES + rng.integers(N_ELECTRODES)] *= 4.0
    mains = p.mains_uv * np.exp(rng.normal(0.0, p.mains_session_sigma))
    n_knots = int(np.ceil(duration_s / p.drift_knot_s)) + 2
    drift = np.exp(np.cumsum(rng.normal(0.0, p.drift_sigma / 2, (n_knots, n_ch)), axis=0))
    return SessionEffects(
        rotation=rotation,
        gain=gain,
        noise_uv=noise_ch,
        mains_uv=mains * rng.uniform(0.5, 1.5, n_ch),
        mains_phase=rng.uniform(0, 2 * np.pi, n_ch),
        drift=drift,
        info={
            "rotation_offsets": [int(o) for o in offsets],
            "rotation": [float(r) for r in rotation],
            "noise_uv": float(noise),
            "mains_uv": float(mains),
        },
    )


def _footprints(anatomy: UserAnatomy, rotation: np.ndarray) -> np.ndarray:
    """(M, 16) ring footprints after this session's band rotation."""
    centre = anatomy.centre + rotation[anatomy.hand]
    d = np.arange(N_ELECTRODES)[None, :] - centre[:, None]
    d = (d + N_ELECTRODES / 2) % N_ELECTRODES - N_ELECTRODES / 2  # circular distance
    return np.exp(-0.5 * (d / anatomy.width[:, None]) ** 2)


def _keystroke_spikes(
    rng: np.random.Generator, anatomy: UserAnatomy, typing: SessionTyping, p: GeneratorParams
) -> tuple[np.ndarray, np.ndarray]:
    """(unit index, spike time in s) of all keystroke-locked bursts.

    Recruitment follows the size principle: a unit fires when its drive (the key's
    recruitment weight x the burst amplitude x this keystroke's effort x a per-unit trial
    factor of log-sd ``recruitment_noise``) exceeds 0.5; its spike count (1-4) grows with
    the excess drive (rate coding, SE §2 "typing force").
    """
    key_idx = np.array([_KEY_POS[k] for k in typing.keys])
    n_keys = key_idx.size
    force = np.exp(rng.normal(0.0, p.keystroke_force_sigma, n_keys))
    weight = anatomy.recruit[key_idx, typing.hand]  # (K, 3, M)
    amps = np.asarray(p.burst_amplitudes)[None, :, None]
    drive = weight * force[:, None, None] * amps
    drive *= np.exp(rng.normal(0.0, p.recruitment_noise, drive.shape))
    k, b, mu = np.nonzero(drive > 0.5)
    centre = np.where(b == 2, typing.release[k], typing.press[k]) + anatomy.latency_s[b]
    excess = np.clip(drive[k, b, mu] / 0.5 - 1.0, 0.0, 1.0)
    n_spikes = 1 + rng.binomial(3, 0.6 * excess)
    first = centre + rng.normal(0.0, p.burst_sd_ms / 1000.0, k.size)
    first -= (n_spikes - 1) * anatomy.isi_s[mu] / 2  # centre the train on the burst
    rep = np.repeat(np.arange(k.size), n_spikes)
    order = np.arange(rep.size) - np.repeat(np.cumsum(n_spikes) - n_spikes, n_spikes)
    jitter = 1.0 + p.isi_cv * rng.normal(0.0, 1.0, rep.size)
    times = first[rep] + order * anatomy.isi_s[mu[rep]] * jitter
    return mu[rep], times


def _tonic_spikes(
    rng: np.random.Generator, anatomy: UserAnatomy, typing: SessionTyping, p: GeneratorParams
) -> tuple[np.ndarray, np.ndarray]:
    """Wrist co-contraction: Poisson firing whose rate follows the local typing speed."""
    units = np.flatnonzero(anatomy.tonic)
    max_rate = 2.0 * p.tonic_hz
    counts = rng.poisson(max_rate * typing.duration_s, units.size)
    mu = np.repeat(units, counts)
    times = rng.uniform(0.0, typing.duration_s, mu.size)
    # Keys per second in a 1 s window, relative to the typical 265 keys/min (SE §1).
    n_near = np.searchsorted(typing.press, times + 0.5) - np.searchsorted(typing.press, times - 0.5)
    activity = np.minimum(n_near / 4.4, 2.0)
    keep = rng.random(mu.size) < activity / 2.0
    return mu[keep], times[keep]


_KEY_POS = {k.name: i for i, k in enumerate(KEYS)}


def _blockwise(x: np.ndarray, per_block: np.ndarray, block: int, op) -> None:
    """In place: x[b*block + i] = op(x[b*block + i], per_block[b] or per_block[b, i]).

    ``x`` (T, C); ``per_block`` (ceil(T / block), C) or (ceil(T / block), block, C).
    """
    n_t, n_ch = x.shape
    n_full = n_t // block * block
    values = per_block if per_block.ndim == 3 else per_block[:, None, :]
    body = x[:n_full].reshape(-1, block, n_ch)
    op(body, values[: n_full // block], out=body)
    if n_full < n_t:
        op(x[n_full:], values[n_full // block, : n_t - n_full], out=x[n_full:])


def render(
    rng: np.random.Generator,
    anatomy: UserAnatomy,
    effects: SessionEffects,
    typing: SessionTyping,
    p: GeneratorParams,
) -> np.ndarray:
    """EMG of one session: (T, 32) float32 in µV; columns 0-15 left band, 16-31 right.

    T = round(duration_s * fs).
    """
    fs = p.sample_rate_hz
    n_t = int(round(typing.duration_s * fs))
    n_ch = 2 * N_ELECTRODES
    mu_k, t_k = _keystroke_spikes(rng, anatomy, typing, p)
    mu_t, t_t = _tonic_spikes(rng, anatomy, typing, p)
    mu = np.concatenate([mu_k, mu_t])
    start = np.round(np.concatenate([t_k, t_t]) * fs).astype(np.int64) - _TEMPLATE_LEN // 2
    ok = (start >= 0) & (start + _TEMPLATE_LEN <= n_t)
    mu, start = mu[ok], start[ok]

    # Sum of MUAP x footprint over spikes as a sparse (T, M) matrix of template taps times the
    # dense (M, 32) footprints: one sparse product instead of a (spikes, L, 16) scatter.
    footprint = _footprints(anatomy, effects.rotation) * anatomy.amp[:, None]  # (M, 16)
    n_mu = anatomy.hand.size
    footprint_32 = np.zeros((n_mu, n_ch))
    for h in range(2):
        own = anatomy.hand == h
        footprint_32[own, h * N_ELECTRODES : (h + 1) * N_ELECTRODES] = footprint[own]
    rows = (start[:, None] + np.arange(_TEMPLATE_LEN)).ravel()
    taps = sparse.csr_matrix(
        (anatomy.template[mu].ravel(), (rows, np.repeat(mu, _TEMPLATE_LEN))), shape=(n_t, n_mu)
    )
    x = np.asarray(taps @ footprint_32)

    # Session effects: gains with slow drift, noise, mains; then the recording filters.
    # Drift and mains are applied block-wise (broadcast over (blocks, block, 32) views) to
    # avoid materialising (T, 32) copies of slowly varying or periodic arrays.
    block = 200  # drift varies over tens of seconds: 0.1 s resolution is plenty
    knots_t = np.linspace(0.0, n_t, effects.drift.shape[0])
    coarse = np.arange(0, n_t, block)
    drift = np.stack([np.interp(coarse, knots_t, effects.drift[:, c]) for c in range(n_ch)], 1)
    drift *= (effects.gain * anatomy.scale)[None, :]
    _blockwise(x, drift, block, np.multiply)
    x += rng.standard_normal((n_t, n_ch), dtype=np.float32) * effects.noise_uv.astype(np.float32)
    # Mains: 60 Hz and 180 Hz repeat every 100 samples at 2 kHz; add one period per block.
    period = int(round(fs / np.gcd(int(fs), int(p.mains_hz))))
    t = np.arange(period)[:, None] / fs
    mains = np.zeros((period, n_ch))
    for harmonic, rel in ((1, 1.0), (3, 0.3)):
        phase = 2 * np.pi * p.mains_hz * harmonic * t + harmonic * effects.mains_phase
        mains += rel * effects.mains_uv * np.sin(phase)
    n_periods = -(-n_t // period)
    _blockwise(x, np.broadcast_to(mains[None], (n_periods, period, n_ch)), period, np.add)
    sos = np.concatenate(
        [
            signal.butter(4, p.highpass_hz, "highpass", fs=fs, output="sos"),
            signal.butter(2, p.lowpass_hz, "lowpass", fs=fs, output="sos"),
        ]
    )
    x = signal.sosfilt(sos, x, axis=0)
    x[:, :N_ELECTRODES] *= -1.0  # mirrored bands: reversed polarity on the left (SE §1)
    return x.astype(np.float32)
