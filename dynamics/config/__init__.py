"""Configuration: frozen, validated dataclasses with dotted overrides (``schema``), named presets
(``presets``, data only) and resolution from defaults, a preset, a file and ``--set`` (``loading``).

Every value is checked when its dataclass is built; a bad value raises :class:`ConfigError` whose message
names the dotted key, the value and what is allowed, e.g. ``task.subjects=0: must be an integer >= 1``.
"""

from ..errors import ConfigError
from .loading import load_config_file, parse_set, resolve_config
from .presets import DEFAULT_PRESET, PRESETS
from .schema import (
    Config,
    DataConfig,
    FlowConfig,
    InitConfig,
    LossConfig,
    ModelConfig,
    TaskConfig,
    TrainConfig,
    check_device,
)

__all__ = ["DEFAULT_PRESET", "PRESETS", "Config", "ConfigError", "DataConfig", "FlowConfig", "InitConfig",
           "LossConfig", "ModelConfig", "TaskConfig", "TrainConfig", "check_device", "load_config_file",
           "parse_set", "resolve_config"]
