"""Typist model: prompt lines -> keystrokes with press/release times, typos and backspaces.

All distributions come from docs/synthetic-evidence.md §5 (computed from the 1,135 real keystroke
logs): lognormal inter-key intervals by context (within word 147 ms, word-initial 223 ms,
before Enter 287 ms, letter -> space 135 ms) scaled by hand/finger context (alternating hands
135 ms, same hand other finger 166 ms, same finger other key 195 ms, same key 152 ms),
lognormal holds (median 90 ms, log-sd 0.36; backspace 75, space 105 ms), rollover arising
from holds longer than the next IKI (~21%), and single-character errors fixed at once by a
pause (median 450 ms) and a backspace run (1: 55%, 2: 24%, 3: 9%, 4: 4.5%); error types
42% next-char-early, 27% adjacent key, 12% other hand, 4% doubled, 15% other. Session timing
follows docs/synthetic-evidence.md §1 ("Session timing"). The keylogger's ~15 ms time grid is
applied to the *logged* times only; the EMG is driven by the true times, so labels carry the same
kind of timing noise as the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keyboard import BACKSPACE, ENTER, KEY_INDEX, KEYS, SPACE, adjacent_keys, char_to_key
from .params import GeneratorParams
from .text import Corpus, session_lines

__all__ = ["TypistTraits", "SessionTyping", "sample_typist", "simulate_typing"]

# IKI multipliers by hand/finger context, relative to the within-word median (147 ms).
_CTX_ALT_HANDS, _CTX_SAME_HAND, _CTX_SAME_FINGER, _CTX_SAME_KEY = 0.92, 1.13, 1.33, 1.03
# Backspace run lengths 1..6 (the tail lumped into 5-6), SE §5 "Errors and corrections".
_RUN_LENGTHS = np.array([1, 2, 3, 4, 5, 6])
_RUN_PROBS = np.array([0.55, 0.24, 0.09, 0.045, 0.045, 0.03])
_ERROR_TYPES = ("early", "adjacent", "other_hand", "doubled", "other")
_ERROR_PROBS = np.array([0.42, 0.27, 0.12, 0.04, 0.15])
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class TypistTraits:
    """Per-user typing idiosyncrasies (stable across that user's sessions, SE §4)."""

    speed: float  # IKI multiplier (per-user median IKI 90-300 ms)
    iki_sigma_scale: float  # per-user log-sd 0.43-0.65 relative to the pooled 0.54
    hold_scale: float  # per-user hold median 60-165 ms
    error_rate: float  # typos per intended character
    space_thumb: str  # "left", "right" or "alternate" (opposite hand of the previous key)
    remap: dict[str, int]  # keys typed by the other hand's index finger ("b", "y")


@dataclass
class SessionTyping:
    """One session's keystrokes. Times are seconds from the start of the recording.

    ``press``/``release``: true times (drive the EMG); ``logged_press``/``logged_release``:
    what the keylogger writes (on the ~15 ms grid). ``hand``: typing hand per keystroke
    (0 left, 1 right; space resolved per the user's thumb habit). ``prompts``: (start, end,
    text) per prompt line. ``duration_s``: the recording length.
    """

    keys: list[str]
    hand: np.ndarray
    press: np.ndarray
    release: np.ndarray
    logged_press: np.ndarray
    logged_release: np.ndarray
    prompts: list[tuple[float, float, str]]
    duration_s: float


def sample_typist(rng: np.random.Generator, p: GeneratorParams) -> TypistTraits:
    remap = {}
    for key, other_hand in (("b", 1), ("y", 0)):
        if rng.random() < p.finger_remap_prob:
            remap[key] = other_hand
    return TypistTraits(
        speed=float(np.clip(np.exp(rng.normal(0.0, p.user_speed_sigma)), 0.6, 2.0)),
        iki_sigma_scale=float(rng.uniform(0.43, 0.65) / 0.54),
        hold_scale=float(np.clip(np.exp(rng.normal(0.0, p.user_hold_sigma)), 0.67, 1.8)),
        error_rate=float(min(0.15, p.error_rate * np.exp(rng.normal(0.0, p.user_error_sigma)))),
        space_thumb=str(rng.choice(["left", "right", "alternate"], p=[0.2, 0.5, 0.3])),
        remap=remap,
    )


def _hand_finger(key: str, traits: TypistTraits) -> tuple[int, int]:
    k = KEYS[KEY_INDEX[key]]
    if key in traits.remap:
        return traits.remap[key], 1
    return k.hand, k.finger


def _line_keys(
    line: str, rng: np.random.Generator, traits: TypistTraits, p: GeneratorParams
) -> list[str]:
    """Keys actually pressed for one prompt line + Enter, with typos and corrections."""
    target = [char_to_key(c) for c in line] + [ENTER]
    out: list[str] = []
    i = 0
    while i < len(target):
        key = target[i]
        if key == ENTER or rng.random() >= traits.error_rate:
            out.append(key)
            i += 1
            continue
        kind = _ERROR_TYPES[rng.choice(len(_ERROR_TYPES), p=_ERROR_PROBS)]
        if kind == "early" and target[i + 1] not in (ENTER, key):
            wrong = target[i + 1]
        elif kind == "doubled" and out and out[-1] not in (SPACE, ENTER, BACKSPACE):
            wrong = out[-1]
        elif kind == "other_hand" and key != SPACE:
            hand = _hand_finger(key, traits)[0]
            pool = [c for c in _LETTERS if KEYS[KEY_INDEX[c]].hand != hand]
            wrong = pool[rng.integers(len(pool))]
        elif kind in ("adjacent", "early", "doubled") and adjacent_keys(key):
            near = adjacent_keys(key)
            wrong = near[rng.integers(len(near))]
        else:
            wrong = _LETTERS[rng.integers(len(_LETTERS))]
        out.append(wrong)
        if rng.random() < p.uncorrected_prob:
            # Left in: a doubled char is an insertion, the others replace the intended key.
            if kind != "doubled":
                i += 1
            continue
        # Noticed after a few more keys; delete them all and retype from the error.
        run = int(rng.choice(_RUN_LENGTHS, p=_RUN_PROBS))
        extra = [k for k in target[i + 1 : i + run] if k != ENTER]
        out.extend(extra)
        out.extend([BACKSPACE] * (1 + len(extra)))
    return out


def _iki(
    prev: str,
    key: str,
    prev_hf: tuple[int, int],
    hf: tuple[int, int],
    rng: np.random.Generator,
    traits: TypistTraits,
    p: GeneratorParams,
) -> float:
    factor = 1.0
    if key == BACKSPACE and prev != BACKSPACE:
        mu, sigma = np.log(0.45), 0.45  # pause before the first backspace, median 450 ms
    elif key == BACKSPACE:
        mu, sigma = np.log(0.13), 0.35  # repeated backspace
    elif key == ENTER:
        mu, sigma = p.iki_before_enter
    elif prev == SPACE:
        mu, sigma = p.iki_word_initial
    elif key == SPACE:
        mu, sigma = p.iki_before_space
    else:
        mu, sigma = p.iki_within_word
        if prev == key:
            factor = _CTX_SAME_KEY
        elif prev_hf[0] != hf[0]:
            factor = _CTX_ALT_HANDS
        elif prev_hf[1] == hf[1]:
            factor = _CTX_SAME_FINGER
        else:
            factor = _CTX_SAME_HAND
    value = np.exp(rng.normal(mu, sigma * traits.iki_sigma_scale)) * factor * traits.speed
    return float(np.clip(value, 0.03, 3.0))


def _hold(
    key: str,
    hf: tuple[int, int],
    rng: np.random.Generator,
    traits: TypistTraits,
    p: GeneratorParams,
) -> float:
    # Per-key/finger medians, SE §5 "Holds and rollover".
    if key == BACKSPACE:
        scale = 0.83
    elif key == SPACE:
        scale = 1.17
    elif hf[0] == 0 and hf[1] >= 2:
        scale = 1.15
    elif hf == (1, 4) and key != ENTER:
        scale = 0.9
    else:
        scale = 1.0
    median = p.hold_median_ms / 1000.0 * scale * traits.hold_scale
    return float(np.clip(median * np.exp(rng.normal(0.0, p.hold_sigma)), 0.03, 0.4))


def _on_grid(
    times: np.ndarray, phase: float, rng: np.random.Generator, p: GeneratorParams
) -> np.ndarray:
    grid = p.key_grid_ms / 1000.0
    snapped = phase + grid * np.round((times - phase) / grid)
    snapped += rng.uniform(-0.0005, 0.0005, size=times.shape)
    on = rng.random(times.shape) < p.key_grid_on_prob
    return np.where(on, snapped, times)


def simulate_typing(
    rng: np.random.Generator,
    traits: TypistTraits,
    corpus: Corpus,
    target_seconds: float,
    p: GeneratorParams,
) -> SessionTyping:
    """Type whole prompt lines until about ``target_seconds`` are filled.

    A line is kept if it ends within half its own duration of the target, so sessions are
    ``target_seconds`` give or take half a line (a few seconds); the recording ends ~0.4 s
    after the last key (SE §1 "Session timing").
    """
    est_line_s = 30 * 0.165 * traits.speed + 0.9
    lines = session_lines(corpus, rng, max(3, int(target_seconds / est_line_s) + 1))
    keys: list[str] = []
    hands: list[int] = []
    press: list[float] = []
    release: list[float] = []
    prompts: list[tuple[float, float, str]] = []
    prompt_start = float(min(2.0, np.exp(rng.normal(np.log(0.8), 0.5))))
    for line in lines:
        line_keys = _line_keys(line, rng, traits, p)
        t = prompt_start + float(np.exp(rng.normal(np.log(p.prompt_to_first_key_s), 0.25)))
        l_keys, l_hand, l_press, l_release = [], [], [], []
        prev, prev_hf = "", (-1, -1)
        prev_hand = 1
        for n, key in enumerate(line_keys):
            hand, finger = _hand_finger(key, traits)
            if key == SPACE:
                hand = {"left": 0, "right": 1}.get(traits.space_thumb, 1 - prev_hand)
            if n > 0:
                t += _iki(prev, key, prev_hf, (hand, finger), rng, traits, p)
            l_keys.append(key)
            l_hand.append(hand)
            l_press.append(t)
            l_release.append(t + _hold(key, (hand, finger), rng, traits, p))
            prev, prev_hf, prev_hand = key, (hand, finger), hand
        # Keep the line if it ends within half a line of the target, so session lengths
        # scatter around target_seconds instead of always falling short.
        if l_release[-1] + 0.4 > target_seconds + 0.5 * (l_release[-1] - prompt_start) and prompts:
            break
        keys += l_keys
        hands += l_hand
        press += l_press
        release += l_release
        prompts.append((prompt_start, l_press[-1], line))
        prompt_start = l_press[-1] + p.enter_to_next_prompt_s
        if l_release[-1] + 0.4 > target_seconds:
            break
    press_a = np.asarray(press)
    release_a = np.asarray(release)
    # The same key cannot be pressed again before it is released.
    for i in range(len(keys) - 1):
        if keys[i + 1] == keys[i]:
            release_a[i] = min(release_a[i], press_a[i + 1] - 0.01)
    phase = float(rng.uniform(0.0, p.key_grid_ms / 1000.0))
    logged_press = _on_grid(press_a, phase, rng, p)
    grid = p.key_grid_ms / 1000.0
    hold_steps = np.maximum(1, np.round((release_a - press_a) / grid))
    logged_release = logged_press + hold_steps * grid
    # The keystroke JSON is sorted by press time (docs/format.md#session-files). IKIs >= 30 ms keep
    # the grid snapping order-preserving, but sort anyway so that can never break.
    order = np.argsort(logged_press, kind="stable")
    return SessionTyping(
        keys=[keys[i] for i in order],
        hand=np.asarray(hands, dtype=np.int64)[order],
        press=press_a[order],
        release=release_a[order],
        logged_press=logged_press[order],
        logged_release=logged_release[order],
        prompts=prompts,
        duration_s=float(release_a.max() + 0.4),
    )
