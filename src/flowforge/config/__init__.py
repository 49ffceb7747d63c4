"""Configuration from the environment (12-factor), in one place.

Every variable the services and scripts read is declared in ``VARIABLES`` (variables.py,
with the parsers of values.py); ``load_settings`` (settings.py) turns the environment into
a frozen ``Settings`` or raises ``ConfigError`` naming the first variable that is missing
or malformed. Nothing else in the package reads ``os.environ`` for configuration. Import
from ``flowforge.config``: the modules inside are its layout, not its interface.
"""

from ..durations import format_duration, parse_duration
from .settings import (
    ConfigError,
    Settings,
    check_api_auth,
    check_api_timeouts,
    load_settings,
    read_env_file,
    redact_url,
)
from .values import AUTH_MODES, ISOLATIONS, LOG_FORMATS, LOG_LEVELS, address_allowed, is_loopback
from .variables import VARIABLES, Variable

__all__ = [
    "AUTH_MODES",
    "ISOLATIONS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "VARIABLES",
    "ConfigError",
    "Settings",
    "Variable",
    "address_allowed",
    "check_api_auth",
    "check_api_timeouts",
    "format_duration",
    "is_loopback",
    "load_settings",
    "parse_duration",
    "read_env_file",
    "redact_url",
]
