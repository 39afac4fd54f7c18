"""Errors a person reads: a refused option as one line, ``--help`` only on request.

Twisted's ``usage.Options`` reports a bad value as "Parameter type enforcement
failed" (no option name) and twistd then prints the whole usage before the
reason. :func:`name_coercion_errors` makes a coerced option's error say the option,
the value and why; :func:`exit_on_usage_error` ends twistd with that line first,
a short hint, and exit status 2 (the usual status for a command-line error).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn, TextIO

from twisted.python import usage

# What a value must be, for the coercions the options use; others say their own error.
_KINDS: dict[Any, str] = {int: "a whole number", float: "a number"}


def describe(coerce: Callable[[str], Any], what: str) -> None:
    """Name what ``coerce`` expects ("a port number (0..65535)") in its error lines."""
    _KINDS[coerce] = what


class _NamedCoercion(usage.CoerceParameter):
    """A coerced parameter whose error names the option and the value."""

    def dispatch(self, parameterName: str, value: str | None) -> None:
        if value is None:
            raise usage.UsageError(f"--{parameterName}: needs a value")
        try:
            coerced = self.coerce(value)
        except ValueError as e:
            what = _KINDS.get(self.coerce)
            reason = f"is not {what}" if what else f"is not valid: {e}"
            raise usage.UsageError(f"--{parameterName}: {value!r} {reason}") from None
        self.options.opts[parameterName] = coerced


def name_coercion_errors(options: usage.Options) -> None:
    """Replace ``options``' coerced parameters so that their errors name the option."""
    dispatch: dict[str, Any] = options._dispatch
    for name, handler in list(dispatch.items()):
        if type(handler) is usage.CoerceParameter:
            dispatch[name] = _NamedCoercion(options, handler.coerce)  # type: ignore[no-untyped-call]


def under_twistd(options: usage.Options) -> bool:
    """True when ``options`` is a twistd subcommand's (twistd sets ``parent``)."""
    return getattr(options, "parent", None) is not None


def exit_on_usage_error(
    command: str, error: usage.UsageError, out: TextIO | None = None
) -> NoReturn:
    """Print ``command: reason`` and a --help hint to stderr; exit with status 2."""
    stream = out if out is not None else sys.stderr
    stream.write(f"{command}: {error}\nRun '{command} --help' for all options.\n")
    stream.flush()
    raise SystemExit(2)
