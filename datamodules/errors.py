"""The one exception type for missing, unreachable or corrupt data files."""


class DataError(RuntimeError):
    """A data file is missing (and cannot be downloaded) or fails its integrity check, or a
    split has fewer images than the config asks for."""
