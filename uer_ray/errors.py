"""Errors that are the user's to fix (a config, a data file, a checkpoint that does not fit the job): reported as one
line naming the key, file or line, never retried by Ray Train's failure handling (retrying cannot help)."""


class UserError(ValueError):
    """Base of every error whose message is meant for the user as it is."""


class RunFinished(UserError):
    """The stage already ran to its end under this run name."""
