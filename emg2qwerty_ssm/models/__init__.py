"""Model stages and the composed model (see docs/models.md).

``build_model(model_cfg) -> EMGModel`` composes encoder → front-end → back-end → classifier
from a ``model`` config node; ``load_model(path)`` loads the project's own checkpoints and the
seed's Lightning checkpoints.
"""

from emg2qwerty_ssm.models.base import StreamingModule
from emg2qwerty_ssm.models.model import EMGModel, build_model

__all__ = ["EMGModel", "StreamingModule", "build_model", "load_model", "save_model"]


def __getattr__(name: str):
    # checkpoints imports omegaconf's classes for the allow-list; load it only when asked
    if name in ("load_model", "save_model"):
        from emg2qwerty_ssm.models import checkpoints

        return getattr(checkpoints, name)
    raise AttributeError(name)
