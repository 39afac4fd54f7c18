"""smbridge: a Session Manager between IceLib-style clients and a CIC Notifier."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
