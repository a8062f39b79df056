"""Configuration: the environment and the TOML sources file, read and checked once."""

from streamapp.config.settings import *  # noqa: F403
from streamapp.config.settings import __all__  # noqa: F401
