"""The errors lowbit raises on purpose.

Every error a user can cause derives from ``LowbitError``; its message is one line that names the file,
node, tensor, shape or dtype involved and says what to do. The CLI prints it and exits with code 2.
Anything else that escapes is a bug in lowbit (exit code 1).
"""


class LowbitError(Exception):
    """A problem with the user's input: a model, a data file, a flag."""


class ModelError(LowbitError):
    """The model file cannot be read or is not a valid graph."""


class UnsupportedOpError(LowbitError):
    """The graph holds ops lowbit has no kernel for."""


class InputError(LowbitError):
    """Input data (an .npz, an array) does not match the graph."""


class GraphError(LowbitError):
    """The graph violates an invariant: a cycle, an undefined or twice-defined value, a shape mismatch."""


class ConfigError(LowbitError):
    """An accelerator description (TOML) or preset name is wrong: a missing or unknown field, a bad value."""
