"""User-facing errors: the CLI prints these as one line and exits with status 2."""


class SincoError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class InputError(SincoError, ValueError):
    """An argument, input file or image that cannot be used; the message names it."""


class RateUnreachableError(InputError):
    """A rate target that no trial of a rate search reached (the message gives the smallest file found)."""


class EncoderError(SincoError, RuntimeError):
    """An external encoder that is missing or failed (a classical codec run through ffmpeg); the message names the method."""


class BitstreamError(SincoError, ValueError):
    """A ``.sinco`` file that is not valid: wrong magic, truncated, corrupted, unsupported."""


class DeviceError(SincoError, RuntimeError):
    """A requested compute device that is not available."""
