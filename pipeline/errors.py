"""Errors the user can fix by changing one option."""


class ConfigError(Exception):
    """A configuration problem found before any work starts.

    Printed as one line naming the option to fix; ``option`` is the dotted Hydra key.
    """

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option


class TooManyFailures(Exception):
    """More samples failed than ``runtime.max_error_fraction`` allows: the data is probably wrong."""
