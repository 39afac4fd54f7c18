"""The bridge's own configuration file (``--config FILE``): YAML, keys named like the options.

A file is a mapping whose keys are the long command-line options of ``twistd
smbridge`` without the dashes (``port: 3952``, ``accept: maintenance``,
``allow-cleartext: true``, ``notifier: [nm1:5597, nm2:5597]``). It is checked here
(known keys, value types) and turned into command-line arguments placed *before*
the real ones, so ``smbridge.options.Options`` validates both the same way and a
flag given on the command line overrides the file. A repeatable option
(``notifier``, ``resource-port``) given on the command line replaces the file's list.

Pure: no Twisted, no I/O beyond reading the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NOT_IN_FILE = ("config",)  # a file does not name another file


class BridgeConfigError(ValueError):
    """The file is refused; ``key`` names the offending key (None: the file as a whole)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class OptionNames:
    """The options a file may set, as ``smbridge.options.Options`` declares them."""

    parameters: frozenset[str]
    flags: frozenset[str]
    repeatable: frozenset[str]
    coerce: Mapping[str, Callable[[str], Any]]

    @classmethod
    def of(cls, options: Any) -> OptionNames:
        declared = list(getattr(options, "optParameters", []))
        params = frozenset(p[0] for p in declared)
        coerce = {p[0]: p[4] for p in declared if len(p) > 4 and callable(p[4])}
        flags = frozenset(f[0] for f in getattr(options, "optFlags", []))
        repeatable = frozenset(
            name[4:].replace("_", "-")
            for name in dir(options)
            if name.startswith("opt_") and name not in ("opt_help", "opt_version")
        )
        return cls(params - set(NOT_IN_FILE), flags, repeatable - params - flags, coerce)

    @property
    def all(self) -> frozenset[str]:
        return self.parameters | self.flags | self.repeatable


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        # YAML reads on/off/yes/no as booleans; the options take "on"/"off" for them
        # (a port option "off", a yes/no option either).
        return "on" if value else "off"
    if isinstance(value, int | float | str):
        return str(value)
    raise BridgeConfigError(
        f"{key}: expected a string or a number, not {type(value).__name__}", key
    )


def parse(data: Any, names: OptionNames) -> list[str]:
    """Command-line arguments for a parsed YAML document; BridgeConfigError if it is wrong."""
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise BridgeConfigError("the file must hold a mapping of option names to values")
    args: list[str] = []
    for raw_key, value in data.items():
        key = str(raw_key)
        if key not in names.all:
            close = difflib.get_close_matches(key, sorted(names.all), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BridgeConfigError(f"{key}: no such option{hint}", key)
        if key in names.flags:
            if not isinstance(value, bool):
                raise BridgeConfigError(f"{key}: expected true or false", key)
            if value:
                args.append(f"--{key}")
        elif key in names.repeatable:
            items = value if isinstance(value, list) else [value]
            for item in items:
                args += [f"--{key}", _scalar(key, item)]
        else:
            if value is None:
                continue  # ``key:`` with no value: the default
            text = _scalar(key, value)
            coerce = names.coerce.get(key)
            if coerce is not None:
                try:
                    coerce(text)
                except ValueError as e:
                    raise BridgeConfigError(f"{key}: {value!r} is not valid: {e}", key) from None
            args += [f"--{key}", text]
    return args


def load(path: Path, names: OptionNames) -> list[str]:
    """Read and check one file; BridgeConfigError says what is wrong (and which key)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BridgeConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BridgeConfigError(yaml_error(path, e)) from None
    return parse(data, names)


def yaml_error(path: Path, error: yaml.YAMLError) -> str:
    """``FILE:LINE: not valid YAML: problem`` (the line where the parser gave up, from 1)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        problem = error.problem or "syntax error"
        return f"{path}:{error.problem_mark.line + 1}: not valid YAML: {problem}"
    return f"{path}: not valid YAML: {error}"


def config_path(argv: Sequence[str]) -> str | None:
    """The FILE of ``--config FILE`` / ``--config=FILE`` in ``argv`` (the last one wins)."""
    found: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--config="):
            found = arg.partition("=")[2]
    return found


def with_config(argv: Sequence[str], path: Path) -> list[str]:
    """``argv`` with its ``--config`` pointing at ``path`` (absolute: immune to a chdir)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(path)
        elif arg.startswith("--config="):
            out[i] = f"--config={path}"
    return out


def _given(argv: Iterable[str], key: str) -> bool:
    return any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)


def expand(argv: Sequence[str], names: OptionNames) -> list[str]:
    """``argv`` with the file's arguments in front (command-line values win)."""
    path = config_path(argv)
    if path is None:
        return list(argv)
    args = load(Path(path), names)
    for key in names.repeatable:
        if _given(argv, key):  # the command line's list replaces the file's
            args = _drop(args, key)
    return args + list(argv)


def _drop(args: list[str], key: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == f"--{key}":
            skip = True
            continue
        out.append(arg)
    return out
