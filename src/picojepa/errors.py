"""User-facing errors: the CLI prints these as one clear message instead of a traceback."""


class PicoJepaError(Exception):
    """A problem caused by the user's input or environment, not a bug in pico-JEPA."""


class DataError(PicoJepaError):
    """Unusable data: missing paths, bad manifests, too many unreadable videos."""


class CheckpointError(PicoJepaError):
    """A checkpoint folder that is missing, incomplete or does not match the expected model."""


class ConfigError(PicoJepaError):
    """An unknown preset, an unknown config field or a value of the wrong type."""
