"""Frame codec and message catalog, shared by clients, the bridge and the Notifier."""

from smbridge.codec.catalog import Priority, name_of, priority_of
from smbridge.codec.frames import (
    DEFAULT_MAX_FRAME,
    BadFrame,
    Decoder,
    Frame,
    Kind,
    encode,
    encode_error,
    encode_raw,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "BadFrame",
    "Decoder",
    "Frame",
    "Kind",
    "Priority",
    "encode",
    "encode_error",
    "encode_raw",
    "name_of",
    "priority_of",
]
