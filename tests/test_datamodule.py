"""Windows, the longer-window curriculum and the two evaluation protocols (docs/recipe.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from trainer_helpers import cache_dir

from emg2qwerty_ssm.data import EMGSessionData, load_split, session_path
from emg2qwerty_ssm.data.formats import Emg2QwertyHDF5
from emg2qwerty_ssm.datamodule import Curriculum, EMGDataModule
from emg2qwerty_ssm.synthetic import ensure_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = ensure_dataset("tiny", 0, cache_dir(tmp_path_factory) / "synthetic-tiny-seed0")
    split = load_split(root / "splits" / "user0.yaml")
    lengths = {
        s["session"]: len(EMGSessionData(session_path(root, s["session"])))
        for part in split.values()
        for s in part
    }
    return root, split, lengths


def _dm(tiny, **kwargs) -> EMGDataModule:
    root, split, _ = tiny
    args = dict(
        window_length=2000, padding=(400, 100), batch_size=4, train_on_longer=Curriculum(factor=2)
    )
    args.update(kwargs)
    return EMGDataModule(root, split, **args)


def test_curriculum_epochs_follow_the_seed() -> None:
    dm = EMGDataModule("/nowhere", {}, train_on_longer=Curriculum(every=10))
    assert [e for e in range(40) if dm.uses_long_windows(e)] == [9, 19, 29, 39]
    off = EMGDataModule("/nowhere", {}, train_on_longer=None)
    assert not any(off.uses_long_windows(e) for e in range(40))
    with pytest.raises(ValueError, match="unknown keys \\['evry'\\]"):
        EMGDataModule("/nowhere", {}, train_on_longer={"evry": 2})


def test_train_loader_switches_to_long_windows_on_curriculum_epochs(tiny) -> None:
    dm = _dm(tiny, train_on_longer={"every": 2, "factor": 2, "batch_size": 2})
    dm.trainer = SimpleNamespace(current_epoch=0)
    short = dm.train_dataloader()
    dm.trainer = SimpleNamespace(current_epoch=1)
    long = dm.train_dataloader()
    assert (short.batch_size, long.batch_size) == (4, 2)
    _, _, lengths = tiny
    train_lengths = [lengths[s["session"]] for s in tiny[1]["train"]]
    assert len(short.dataset) == sum((t - 2000) // 2000 + 1 for t in train_lengths)
    assert len(long.dataset) == sum((t - 4000) // 4000 + 1 for t in train_lengths)


def test_paper_protocol_chunks_drop_the_tail(tiny) -> None:
    _, split, lengths = tiny
    dm = _dm(tiny, chunk_length=6000)
    ds = dm.dataset("test/paper")
    expected = sum(lengths[s["session"]] // 6000 for s in split["test"])
    assert len(ds) == expected
    emg, _ = ds[0]
    assert emg.shape[0] == 6000 + 100  # first chunk: no left context at the session start


def test_sessions_shorter_than_a_chunk_are_one_whole_window(tiny) -> None:
    _, split, lengths = tiny
    longest = max(lengths.values())
    dm = _dm(tiny, chunk_length=longest + 1, val_continuous={"window_length": longest + 1})
    for name, part in (("test/paper", "test"), ("val_continuous", "val")):
        ds = dm.dataset(name)
        assert len(ds) == len(split[part])
        assert [ds[i][0].shape[0] for i in range(len(ds))] == [
            lengths[s["session"]] for s in split[part]
        ]
    batch = next(iter(dm.eval_dataloader("test", "paper")))
    assert int(batch["target_lengths"].min()) > 0  # whole sessions carry their labels


def test_session_protocol_is_one_whole_session_per_batch(tiny) -> None:
    _, split, lengths = tiny
    loader = _dm(tiny).eval_dataloader("test", "session")
    assert loader.batch_size == 1
    assert [int(b["input_lengths"][0]) for b in loader] == [
        lengths[s["session"]] for s in split["test"]
    ]


def test_no_training_windows_is_a_clear_error(tiny) -> None:
    _, _, lengths = tiny
    dm = _dm(tiny, window_length=max(lengths.values()) + 1)
    with pytest.raises(ValueError, match="window_length"):
        dm.dataset("train")


def test_unknown_protocol_is_refused(tiny) -> None:
    with pytest.raises(ValueError, match="protocol"):
        _dm(tiny).eval_dataloader("test", "streaming")


def test_instantiated_from_the_run_config(tiny) -> None:
    """conf/datamodule/windows.yaml is the constructor's keyword arguments."""
    from trainer_helpers import compose_cfg

    from emg2qwerty_ssm.train import build_datamodule
    from emg2qwerty_ssm.transforms import Compose

    root, split, _ = tiny
    cfg = compose_cfg(["experiment=demo", "num_workers=0", "evaluation.chunk_length=12000"])
    dm = build_datamodule(cfg, root, split)
    assert isinstance(dm, EMGDataModule) and isinstance(dm.train_transform, Compose)
    assert (dm.window_length, dm.padding, dm.batch_size) == (4000, (1000, 200), 8)
    assert (dm.long_every, dm.chunk_length, dm.val_continuous_window) == (4, 12000, 160000)
    emg, _ = dm.dataset("val")[1]  # the second window: padded on both sides
    assert emg.shape == (1000 + 4000 + 200, 2, 16)


class _RenamedHDF5(Emg2QwertyHDF5):
    """A "new" format for the test: the same files under another suffix, counting reads."""

    suffix = ".h5"

    def __init__(self) -> None:
        self.validated: list[str] = []

    def validate(self, path, full):
        self.validated.append(path.name)
        return super().validate(path, full)


def test_a_dataset_brings_its_own_session_format(tiny, tmp_path) -> None:
    """dataset.format is the one seam: file names, windows and checks all go through it."""
    from emg2qwerty_ssm.data.splits import validate_split

    root, split, lengths = tiny
    small = {k: v[:1] for k, v in split.items()}
    for part in small.values():
        for s in part:
            (tmp_path / f"{s['session']}.h5").symlink_to(session_path(root, s["session"]))
    fmt = _RenamedHDF5()
    assert validate_split(tmp_path, small, session_format=fmt) == []
    assert sorted(fmt.validated) == sorted(f"{s['session']}.h5" for p in small.values() for s in p)
    assert validate_split(tmp_path, small)[0].endswith("(named in split 'train')")  # no .hdf5
    dm = EMGDataModule(tmp_path, small, window_length=2000, session_format=fmt)
    assert dm.sessions("test")[0].suffix == ".h5"
    test_session = small["test"][0]["session"]
    assert len(dm.dataset("test/session")) == 1
    assert dm.dataset("test/session")[0][0].shape[0] == lengths[test_session]
