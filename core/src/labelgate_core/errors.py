"""Typed failures: consumers retry what is retriable and dead-letter what is permanent."""


class RetriableError(Exception):
    """A transient failure (a timeout, a busy dependency): try again after a backoff."""


class PermanentError(Exception):
    """The message can never be processed as it is: send it to the dead-letter topic at once."""
