"""The error raised for data that is missing or not in the expected format."""


class DatasetError(Exception):
    """A user-facing problem with the data: the message names the path and what was expected.

    Entry points print the message as one paragraph and exit non-zero, without a traceback.
    """
