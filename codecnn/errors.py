"""User-facing errors.

Library code raises :class:`CodecnnError` (or a subclass) for anything a user can fix: a missing file,
bad geometry, a QP out of range, an encoder that failed. The CLI turns it into a one-line message and
exit code 2, with no traceback. Programming errors stay ordinary exceptions.
"""


class CodecnnError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix."""


class EncoderError(CodecnnError):
    """An encoder could not be found or failed; the message carries its own last output lines."""


class InvalidQPError(CodecnnError, ValueError):
    """A quantisation parameter outside the range the codec allows."""
