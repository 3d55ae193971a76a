"""The error raised for data that is missing or not in the expected format."""

from snnseg_jax.cli import UserError


class DatasetError(UserError):
    """A problem with the data: the message names the path and what was expected.

    Entry points print the message as one paragraph and exit non-zero, without a traceback.
    """
