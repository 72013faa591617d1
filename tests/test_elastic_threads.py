"""Elastic threads (emg2qwerty_ssm/elastic_threads.py): a job with ``elastic_threads: true``
follows the thread budget file `make pareto` names in its environment; the runner raises a
running stream's budget when another stream ends."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from trainer_helpers import cache_dir, compose_cfg

from emg2qwerty_ssm import pareto_sweep
from emg2qwerty_ssm.elastic_threads import (
    THREADS_FILE_ENV,
    ElasticThreads,
    read_budget,
    write_budget,
)
from emg2qwerty_ssm.pareto_sweep import share_cores
from emg2qwerty_ssm.results import config_hash
from emg2qwerty_ssm.train import train
from emg2qwerty_ssm.trainer_setup import build_callbacks


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_budget_file_round_trip_and_bad_contents(tmp_path: Path) -> None:
    path = tmp_path / "stream0"
    assert read_budget(path) is None
    write_budget(path, 3)
    assert read_budget(path) == 3
    for text in ("", "two", "0", "-1"):
        path.write_text(text)
        assert read_budget(path) is None, text
    with pytest.raises(ValueError, match="thread budget must be >= 1, got 0"):
        write_budget(path, 0)


def test_callback_follows_the_budget_and_restores_the_start_count(
    tmp_path: Path, restore_threads
) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "stream0"
    write_budget(path, 2)
    cb = ElasticThreads(path, poll_s=0.0)
    cb.on_fit_start(None, None)
    assert torch.get_num_threads() == 2
    write_budget(path, 1)
    cb.on_train_batch_start(None, None, None, 0)
    assert torch.get_num_threads() == 1
    write_budget(path, 2)
    path.write_text("garbled")  # a budget being rewritten by hand: kept as it is
    cb.on_train_batch_start(None, None, None, 1)
    assert torch.get_num_threads() == 1
    write_budget(path, 2)
    cb.on_train_batch_start(None, None, None, 2)
    assert torch.get_num_threads() == 2
    cb.teardown(None, None, stage="fit")  # as Lightning calls it
    assert torch.get_num_threads() == 1


def test_callback_polls_at_most_every_poll_s(tmp_path: Path, restore_threads) -> None:
    torch.set_num_threads(1)
    path = tmp_path / "stream0"
    write_budget(path, 1)
    cb = ElasticThreads(path, poll_s=3600.0)
    cb.on_fit_start(None, None)
    write_budget(path, 2)
    cb.on_train_batch_start(None, None, None, 0)
    assert torch.get_num_threads() == 1


def test_only_configs_that_ask_for_it_with_a_budget_file_get_the_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def has_it(overrides: list[str]) -> bool:
        cfg = compose_cfg(["+sweep=pareto_synthetic", *overrides])
        return any(isinstance(c, ElasticThreads) for c in build_callbacks(cfg, tmp_path, False))

    monkeypatch.delenv(THREADS_FILE_ENV, raising=False)
    assert not has_it(["sweep/pareto_size=s4_large"])  # no runner, no budget
    monkeypatch.setenv(THREADS_FILE_ENV, str(tmp_path / "stream0"))
    assert has_it(["sweep/pareto_size=s4_large"])  # S4_large: thread-invariant training
    for size in ("xxs", "xs", "s", "m", "tc_s4_small", "tc_s4_medium"):
        assert not has_it([f"sweep/pareto_size={size}"]), size
    # an execution setting: it does not change the config hash (the front's runs stay valid)
    a = compose_cfg(["+sweep=pareto_synthetic", "sweep/pareto_size=s4_large"])
    b = compose_cfg(["+sweep=pareto_synthetic", "sweep/pareto_size=s4_large",
                     "elastic_threads=false"])  # fmt: skip
    assert a.elastic_threads and not b.elastic_threads
    assert config_hash(a) == config_hash(b)


def test_share_cores() -> None:
    assert share_cores([], 2) == {}
    assert share_cores([0, 1], 2) == {0: 1, 1: 1}
    assert share_cores([1], 2) == {1: 2}
    assert share_cores([0, 2, 3], 4) == {0: 2, 2: 1, 3: 1}
    assert share_cores([0, 1, 2], 2) == {0: 1, 1: 1, 2: 1}  # at least one each


def test_runner_hands_an_ended_streams_core_to_the_running_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stream 0 ends at once; stream 1's job sees its budget go from 1 to 2."""
    seen = tmp_path / "seen.txt"
    waiter = textwrap.dedent(f"""
        import os, time
        path, seen = os.environ[{THREADS_FILE_ENV!r}], []
        for _ in range(400):
            seen.append(open(path).read().strip())
            if seen[-1] == "2":
                break
            time.sleep(0.05)
        open({str(seen)!r}, "w").write(",".join(dict.fromkeys(seen)))
    """)

    def fake_commands(stream, sweep_dir, overrides=()):  # noqa: ANN001, ANN202
        quick = stream[0][0] == "xxs"
        return [[sys.executable, "-c", "pass" if quick else waiter]]

    monkeypatch.setattr(pareto_sweep, "stream_commands", fake_commands)
    infos = pareto_sweep.run_streams(
        [[("xxs", 0)], [("s4_large", 0)]], [], tmp_path, [], threads=1, poll_s=0.05
    )
    assert [i["returncode"] for i in infos] == [0, 0]
    assert seen.read_text() == "1,2"
    assert [n for _, n in infos[1]["threads"]] == [1, 2]
    assert [n for _, n in infos[0]["threads"]] == [1]


def test_a_training_run_takes_the_budget_and_gives_it_back(
    tmp_path: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch, restore_threads, caplog
) -> None:
    """The whole trainer (Lightning calls the hooks): the tiny sweep job with
    ``elastic_threads=true`` trains at the budget's two threads and ends at its own one."""
    torch.set_num_threads(1)
    budget = tmp_path / "stream0"
    write_budget(budget, 2)
    monkeypatch.setenv(THREADS_FILE_ENV, str(budget))
    tiny = ["debug=smoke", "dataset=synthetic_tiny", "trainer.max_epochs=1", "batch_size=4",
            "trainer.check_val_every_n_epoch=1", "datamodule.window_length=2000",
            "datamodule.padding=[400,100]", "evaluation.splits=[val]"]  # fmt: skip
    cfg = compose_cfg(
        ["+sweep=pareto_synthetic", "sweep/pareto_size=xxs", "elastic_threads=true", *tiny],
        run_dir=tmp_path / "run",
        cache=cache_dir(tmp_path_factory),
    )
    with caplog.at_level("INFO", logger="emg2qwerty_ssm.elastic_threads"):
        results = train(cfg)
    assert "CPU threads 1 -> 2 (budget stream0)" in caplog.text
    assert (tmp_path / "run" / "results.json").is_file() and results["metrics"]
    assert torch.get_num_threads() == 1
