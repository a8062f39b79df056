"""Configuration: the environment and the TOML sources file, read and checked once.

spec.py       Setting (one variable, declared once) and the parsers with their bounds
secret.py     secret values and secret files, checked without echo
variables.py  SPEC: every environment variable, in the README's order; SETTINGS_TABLE
model.py      the typed result: Settings, Topics, SourceDefaults, SourceConfig, Channel
security.py   KafkaSecurity: how Kafka clients authenticate
sources.py    the TOML sources file: sources, OAuth clients, notification channels
env.py        the environment -> Settings (load_settings), unknown_variables
"""

from streamapp.config.env import load_settings, unknown_variables
from streamapp.config.model import (
    DEFAULT_EVENTS_URL,
    Channel,
    Settings,
    SourceConfig,
    SourceDefaults,
    Topics,
)
from streamapp.config.sources import load_sources_file
from streamapp.config.variables import SETTINGS_TABLE

__all__ = [
    "DEFAULT_EVENTS_URL",
    "SETTINGS_TABLE",
    "Channel",
    "Settings",
    "SourceConfig",
    "SourceDefaults",
    "Topics",
    "load_settings",
    "load_sources_file",
    "unknown_variables",
]
