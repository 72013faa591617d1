"""results.json writing, reading and the config hash."""

from __future__ import annotations

import json
import math
import os

import pytest
from omegaconf import OmegaConf

from emg2qwerty_ssm.results import (
    REQUIRED_KEYS,
    config_hash,
    git_commit,
    metric_key,
    read_results,
    write_results,
)


def _results(**extra):
    base = {k: None for k in REQUIRED_KEYS}
    base.update(
        model="tc_s4_small",
        params=388437,
        metrics={metric_key("test", "paper", "greedy"): {"CER": 12.5}},
        CER=12.5,
    )
    base.update(extra)
    return base


def test_write_then_read_round_trips_and_leaves_no_temporary_files(tmp_path) -> None:
    path = write_results(tmp_path / "run", _results(wall_time_s=3.0))
    assert path.name == "results.json"
    assert read_results(tmp_path / "run")["metrics"]["test/paper/greedy"]["CER"] == 12.5
    assert os.listdir(tmp_path / "run") == ["results.json"]


def test_non_finite_numbers_are_written_as_null(tmp_path) -> None:
    write_results(tmp_path, _results(CER=math.nan, wall_time_s=math.inf))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["CER"] is None and data["wall_time_s"] is None


def test_missing_keys_are_refused_and_the_old_file_is_kept(tmp_path) -> None:
    write_results(tmp_path, _results(CER=1.0))
    bad = _results()
    del bad["config_hash"]
    with pytest.raises(ValueError, match="config_hash"):
        write_results(tmp_path, bad)
    assert read_results(tmp_path)["CER"] == 1.0


def test_read_results_names_the_missing_keys(tmp_path) -> None:
    (tmp_path / "results.json").write_text('{"model": "x"}')
    with pytest.raises(ValueError, match="params"):
        read_results(tmp_path)


def test_config_hash_ignores_where_a_run_executes_but_not_what_it_computes() -> None:
    a = OmegaConf.create({"model": {"name": "m", "h": 96}, "run_dir": "/a", "trainer": {"d": 1}})
    b = OmegaConf.create({"model": {"name": "m", "h": 96}, "run_dir": "/b", "trainer": {"d": 2}})
    c = OmegaConf.create({"model": {"name": "m", "h": 128}, "run_dir": "/a", "trainer": {"d": 1}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)


def test_git_commit_outside_a_repository_is_none(tmp_path) -> None:
    assert git_commit(tmp_path) is None
