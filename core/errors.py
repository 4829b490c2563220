"""Domain errors. Every error a user can cause is a `MedciteError` with a one-line message.

The CLI prints `medcite: error: <message>` and exits 2; the HTTP layer maps each class to a status code in one
place (service/app.py). Nothing else catches broad exceptions.
"""


class MedciteError(Exception):
    """Base class: a user-facing problem, with a message that says what to do next."""


class ConfigError(MedciteError):
    """A config file, flag or environment variable has an invalid value."""


class DataError(MedciteError):
    """Corpus files are missing or unreadable."""


class IndexNotFoundError(MedciteError):
    """No usable index directory where one was expected."""


class IndexCorruptError(MedciteError):
    """The index directory exists but is incomplete, damaged, or does not match its manifest."""


class InvalidRequestError(MedciteError):
    """A query or request field is out of bounds (empty question, k too large, unknown mode)."""


class QualityError(MedciteError):
    """A trained artifact is worse than what it would replace (a fine-tune that loses to its base)."""


class ForbiddenError(MedciteError):
    """The request asks for something this server's operator has not turned on."""


class ModelLoadError(MedciteError):
    """A generator or embedder could not be loaded from the configured location."""


class OverloadedError(MedciteError):
    """The generation queue is full; the caller should retry later."""


class UpstreamError(MedciteError):
    """A remote generator backend failed or answered with something unusable."""
