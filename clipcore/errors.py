"""Domain exceptions. Every message says what went wrong and what to do about it.

The CLI turns any :class:`CaptureError` into a one-line message and a non-zero exit code.
"""


class CaptureError(Exception):
    """Base class for errors a user can fix; the message names the fix."""


class ConfigError(CaptureError):
    """A configuration value, file or ``--set`` override is invalid."""


class ShardFormatError(CaptureError):
    """A file is not a readable carla-clips shard of a supported version."""


class ClipValidationError(CaptureError):
    """A clip handed to the shard writer breaks the format's shapes, dtypes or ranges."""


class BackendUnavailableError(CaptureError):
    """The requested capture backend cannot run here (no server, missing client, ...)."""


class RetryClip(CaptureError):
    """A simulator's clip went wrong (a sensor timed out or disagreed); record it again."""


class ServerLost(CaptureError):
    """The simulator stopped answering.

    Reconnect with the backend's ``restart()``, then retry the clip.
    """


class FreshProcess(ServerLost):
    """A server lost by a process whose CARLA client holds its Traffic Manager.

    The client library keeps one per port for the life of the process: reconnect from a new process.
    """

    def __init__(self, lost: str) -> None:
        self.lost = lost
        super().__init__(
            f"{lost}; this process holds the lost server's Traffic Manager (CARLA's client keeps "
            "one per port for the life of the process), so it does not reconnect: run the same "
            "command again (a supervised recording, the default, does that itself)"
        )

    def __reduce__(self) -> tuple:
        return (FreshProcess, (self.lost,))


class SetupError(CaptureError):
    """The simulator cannot be set up as configured (a setting to change, not a lost server).

    Never retried.
    """


class ServerGone(BackendUnavailableError):
    """A lost server did not answer again within ``--server-wait`` seconds."""
