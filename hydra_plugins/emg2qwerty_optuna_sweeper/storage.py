"""The study's storage: opening it (clear errors), heartbeats, and which trials fill the study.

Crash safety comes from Optuna itself: a worker records a heartbeat for each trial it runs
(``heartbeat_interval``); any worker fails trials whose heartbeat is older than
``grace_period`` (:func:`optuna.storages.fail_stale_trials`), and
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (Optuna >= 4.9's name for
``RetryFailedTrialCallback``) re-enqueues each of them once as a WAITING
trial with the same parameters, which the next ``study.ask()`` of any worker runs.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import HydraException

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

#: user attribute of a trial asked after other workers had already filled n_trials (not run)
NOT_RUN_ATTR = "not_run"


def absolute_sqlite(url: str) -> str:
    """Make a relative SQLite path absolute (jobs may run in another working directory)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
        path = url[len(prefix) :]
        if path and path != ":memory:":
            return prefix + str(Path(path).resolve())
    return url


def redacted(url: str) -> str:
    """The URL with its password hidden (it is logged and written to reports)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<storage>"


def storage_location(url: str) -> str:
    """The SQLite file path, or the (password-free) URL of a database server."""
    prefix = "sqlite:///"
    return url[len(prefix) :] if url.startswith(prefix) else redacted(url)


def make_storage(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None = None,
) -> Any:
    """An :class:`optuna.storages.RDBStorage`; a corrupt or unreachable database is a
    :class:`HydraException` naming the file (or the server URL)."""
    import optuna
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several worker processes share the file: wait for locks instead of failing at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    if heartbeat_interval:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs.update(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=retry,
        )
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, OperationalError) as e:
            # Workers starting together on a new database race to create its tables; the
            # loser sees an integrity/lock error, and a retry finds the tables in place.
            if attempt == 4:
                raise _storage_error(url, e) from e
            log.info(f"storage not ready ({type(e).__name__}); retrying")
            time.sleep(0.5 + attempt)
        except (DatabaseError, RuntimeError, ValueError) as e:  # not a database / old schema
            raise _storage_error(url, e) from e
    raise AssertionError("unreachable")


def _storage_error(url: str, e: Exception) -> HydraException:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return HydraException(
        f"cannot open the Optuna storage {storage_location(url)} "
        f"(hydra.sweeper.storage): {first_line}. If it is a corrupt SQLite file, move it "
        "away (a new study starts) or point hydra.sweeper.storage elsewhere."
    )


def in_study(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that fill the study's ``n_trials``, by trial number.

    Not counted: trials over the budget or asked after n_trials was reached (both never run),
    and failed trials that were re-enqueued (their retry counts instead).
    """
    from optuna.trial import TrialState

    # RetryHeartbeatStaleTrialCallback.retried_trial_number (experimental, warns every call)
    retried = {t.system_attrs.get("failed_trial") for t in trials} - {None}
    return sorted(
        (
            t
            for t in trials
            if not t.user_attrs.get("over_budget")
            and not t.user_attrs.get(NOT_RUN_ATTR)
            and not (t.state == TrialState.FAIL and t.number in retried)
        ),
        key=lambda t: t.number,
    )


class Heartbeats:
    """Record heartbeats of in-flight trials so a dead worker's trials can be failed later."""

    def __init__(self, storage: Any, trial_ids: Sequence[int], interval: int | None) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        for tid in self.trial_ids:
            self.storage.record_heartbeat(tid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception as e:  # a missed beat must not kill the sweep
                log.warning(f"optuna heartbeat failed: {e}")

    def __enter__(self) -> Heartbeats:
        if self.interval:
            self._beat()
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
