"""The ``smbridge`` console script: one dispatcher, one subcommand per job.

``smbridge client URI --user U ...`` logs on to a bridge, watches queues and prints
every notification until Ctrl-C or SIGTERM, then logs off (DestroySession) so the
bridge frees the session at once instead of letting it linger. Every way out after
logon logs off: a signal, an error, and the reader of a piped stdout going away
(``| head -1``), which ends the command quietly with exit 0. ``certs``
(smbridge.certs) and ``sizing`` (smbridge.roster.sizing) are the other
subcommands; each registers a ``handler`` that takes the parsed arguments and
returns nothing (it exits through SystemExit).
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from smbridge import __version__
from smbridge.cli_output import Printer, watch_output
from smbridge.client import BridgeClient, ClientError, connect, parse_bridge_uri
from smbridge.client.keeper import KeeperEvent, SessionKeeper
from smbridge.client.ws import DEFAULT_CLIENT_TYPE
from smbridge.codec import Frame
from smbridge.codec.catalog import GET_DIRECTORY

DEMO_CA = Path("smbridge-work/pki/ca.pem")
PASSWORD_ENV = "SMBRIDGE_PASSWORD"
LOGOFF_TIMEOUT = 5.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smbridge", description="smbridge command-line tools")
    parser.add_argument("--version", action="version", version=f"smbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_client(commands)
    from smbridge.certs import add_parser as _add_certs

    _add_certs(commands)
    from smbridge.roster.sizing import add_parser as _add_sizing

    _add_sizing(commands)
    return parser


def _add_client(commands: Any) -> None:
    p = commands.add_parser("client", help="log on to a bridge, watch queues, print notifications")
    p.add_argument(
        "uri",
        metavar="URI",
        help="tls://HOST[:3952], tcp://HOST[:3952], or wss://PROXY/[extra/]SERVER/session (or ws://)",
    )
    p.add_argument("--user", help="required unless --cert logs on by certificate")
    p.add_argument(
        "--cert",
        type=Path,
        metavar="PATH",
        help="client certificate (PEM): log on by certificate, without a password",
    )
    p.add_argument("--key", type=Path, metavar="PATH", help="its key (default: in --cert)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--password", help=f"(prefer --password-file or ${PASSWORD_ENV})")
    secret.add_argument("--password-file", type=Path, metavar="PATH")
    p.add_argument("--station")
    p.add_argument("--watch", action="append", default=[], metavar="queue:NAME", help="repeatable")
    p.add_argument("--directory", action="append", default=[], metavar="NAME", help="repeatable")
    p.add_argument(
        "--download",
        action="append",
        default=[],
        metavar="KIND:PATH",
        help="download a resource, e.g. httpsecure:status-icons/Away.png (repeatable)",
    )
    p.add_argument(
        "--download-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where downloads are saved (default: the current directory)",
    )
    p.add_argument(
        "--client-type",
        default=DEFAULT_CLIENT_TYPE,
        metavar="NAME",
        help=f"ININ-Client-Type sent on ws:// and wss:// (default {DEFAULT_CLIENT_TYPE})",
    )
    p.add_argument(
        "--ca",
        type=Path,
        metavar="PATH",
        help=f"CA certificate (default {DEMO_CA} if present, else the system's trust)",
    )
    p.add_argument(
        "--hostname", help="name to check in the bridge's certificate (default: URI host)"
    )
    p.add_argument("--session-timeout", type=int, metavar="SECONDS")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="connect timeout")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument(
        "--keep",
        action="store_true",
        help="stay logged on: resume after a dropped connection, log on again by the"
        " roster, follow Migrate (docs/client.md)",
    )
    p.set_defaults(handler=_client_command)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))


# --- smbridge client --------------------------------------------------------------
def _client_command(args: argparse.Namespace) -> None:
    try:
        parse_bridge_uri(args.uri)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    args.queues = [queue_name(w) for w in args.watch]
    args.downloads = [download_spec(d) for d in args.download]
    if getattr(args, "cert", None) is not None:  # certificate logon (docs/client.md)
        args.password = None
    elif not args.user:
        raise argparse.ArgumentTypeError("--user is required (or --cert)")
    else:
        args.password = resolve_password(args.password, args.password_file, os.environ)
    if args.ca is None and DEMO_CA.exists():
        args.ca = DEMO_CA
    react(run_client, (args,))


def queue_name(watch: str) -> str:
    """``queue:Sales`` → ``Sales``; anything else is a usage error."""
    kind, sep, name = watch.partition(":")
    if not sep or kind != "queue" or not name:
        raise argparse.ArgumentTypeError(f"--watch {watch!r}: expected queue:NAME")
    return name


def download_spec(text: str) -> tuple[str, str]:
    """``httpsecure:status-icons/Away.png`` → ``("httpsecure", "status-icons/Away.png")``."""
    kind, sep, path = text.partition(":")
    if not sep or not kind or not path:
        raise argparse.ArgumentTypeError(f"--download {text!r}: expected KIND:PATH")
    return kind, path


def save_name(directory: Path, path: str) -> Path:
    """Where a download is saved: its last path segment (never outside ``directory``)."""
    name = path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        name = "download"
    return directory / name


def resolve_password(password: str | None, password_file: Path | None, environ: Any) -> str:
    """--password, else --password-file (first line), else $SMBRIDGE_PASSWORD, else prompt."""
    if password is not None:
        return password
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise argparse.ArgumentTypeError(
                f"--password-file: {e.strerror}: {e.filename}"
            ) from None
        return lines[0] if lines else ""
    if environ.get(PASSWORD_ENV) is not None:
        return str(environ[PASSWORD_ENV])
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    raise argparse.ArgumentTypeError(
        f"no password: use --password-file PATH, ${PASSWORD_ENV} or --password"
    )


def _fail(message: str) -> NoReturn:
    print(f"smbridge: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def _on_signals(reactor: Any, callback: Callable[[str], None]) -> None:
    # Installed once the reactor runs, over Twisted's own handlers, so SIGINT works
    # even when the parent started us with SIGINT ignored (background jobs).
    def handler(signum: int, _frame: object) -> None:
        reactor.callFromThread(callback, signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


# A stop that ends the command with a logoff and exit 0.
QUIET_STOPS = ("SIGINT", "SIGTERM", "stdout-closed")


async def run_client(
    reactor: Any,
    args: argparse.Namespace,
    on_signals: Callable[[Any, Callable[[str], None]], None] = _on_signals,
) -> None:
    """Connect, log on, watch, print; on SIGINT/SIGTERM log off and return (exit 0).

    ``on_signals(reactor, stop)`` arranges for ``stop(signal_name)`` to be called on
    SIGINT/SIGTERM; tests pass their own to stop the client without real signals.
    Once logged on, every way out logs off first: a signal, the output's reader
    going away (exit 0), an error (exit 1).
    """
    if getattr(args, "keep", False):
        await run_kept(reactor, args, on_signals)
        return
    stop: Deferred[str] = Deferred()

    def request_stop(why: str) -> None:
        if not stop.called:
            stop.callback(why)

    printer = Printer(args.json, on_closed=lambda: request_stop("stdout-closed"))
    reactor.callWhenRunning(on_signals, reactor, request_stop)
    unwatch = watch_output(reactor, printer)
    try:
        await _run_client(reactor, args, printer, stop, request_stop)
    finally:
        unwatch()


async def _run_client(
    reactor: Any,
    args: argparse.Namespace,
    printer: Printer,
    stop: Deferred[str],
    request_stop: Callable[[str], None],
) -> None:
    try:
        client: BridgeClient = await connect(
            reactor,
            args.uri,
            ca=args.ca,
            hostname=args.hostname,
            timeout=args.timeout,
            client_type=getattr(args, "client_type", DEFAULT_CLIENT_TYPE),
            cert=getattr(args, "cert", None),
            key=getattr(args, "key", None),
        )
    except Exception as e:
        _fail(f"cannot connect to {args.uri}: {e}")
    if stop.called:  # signalled while connecting
        await client.close()
        return
    client.closed.addCallback(lambda _: request_stop("closed"))

    def on_notification(name: str, frame: Frame) -> None:
        printer.notification(name, frame)
        if name == "SessionTerminated":
            request_stop("terminated")

    def on_stop(why: str) -> str:
        if why in QUIET_STOPS:
            client.logoff()  # during setup this also fails the pending request
        return why

    client.add_listener(on_notification)
    stop.addCallback(on_stop)
    try:
        if getattr(args, "cert", None) is not None:
            reply = await client.logon_certificate(
                args.user, station=args.station, session_timeout=args.session_timeout
            )
        else:
            reply = await client.logon(
                args.user, args.password, station=args.station, session_timeout=args.session_timeout
            )
        printer.logon(reply)
        for queue in args.queues:
            printer.snapshot(await client.watch_queue(queue))
        for name in args.directory:
            printer.directory(await client.get_directory(name))
        for kind, path in getattr(args, "downloads", []):
            uri, content = await client.download(kind, path)
            printer.download(kind, path, uri, len(content), _save(args, path, content))
    except ClientError as e:
        if not stop.called:
            await _log_off(reactor, client)  # DestroySession if the logon went through
            _fail(str(e))
        if stop.result == "closed":
            _fail(str(e))
    except BaseException:
        if not stop.called:
            await _log_off(reactor, client)
        raise
    why = await stop
    if why in QUIET_STOPS:
        await _logged_off(reactor, client)
    elif why == "terminated":
        await client.close()
        _fail(f"session terminated by the bridge: {client.terminated_reason}")
    else:
        _fail("the bridge closed the connection")


async def run_kept(
    reactor: Any,
    args: argparse.Namespace,
    on_signals: Callable[[Any, Callable[[str], None]], None] = _on_signals,
) -> None:
    """``--keep``: the same, through a SessionKeeper that outlives connections.

    Resumes, fresh logons and migrations are printed as they happen; the watches
    come back by themselves. Ends (exit 0) on SIGINT/SIGTERM or when the output's
    reader goes away, after logging off, or (exit 1) when the keeper gives up: the
    session was ended by the bridge, the password stopped working, or no bridge
    would take the session. An error after logon logs off before exit 1.
    """
    stop: Deferred[str] = Deferred()

    def request_stop(why: str) -> None:
        if not stop.called:
            stop.callback(why)

    printer = Printer(args.json, on_closed=lambda: request_stop("stdout-closed"))
    reactor.callWhenRunning(on_signals, reactor, request_stop)
    unwatch = watch_output(reactor, printer)
    keeper = SessionKeeper(
        reactor,
        args.uri,
        args.user or "",
        args.password or "",
        ca=args.ca,
        cert=getattr(args, "cert", None),
        key=getattr(args, "key", None),
        station=args.station,
        session_timeout=args.session_timeout,
    )
    keeper.add_listener(printer.notification)

    def on_event(event: KeeperEvent) -> None:
        printer.keeper_event(event)
        if event.kind == "ended":
            request_stop(f"ended:{event.reason}")

    keeper.add_event_listener(on_event)
    try:
        await _run_kept(args, keeper, printer, stop)
    finally:
        unwatch()


async def _run_kept(
    args: argparse.Namespace, keeper: SessionKeeper, printer: Printer, stop: Deferred[str]
) -> None:
    try:
        printer.logon(await keeper.start())
        for queue in args.queues:
            printer.snapshot(await keeper.watch_queue(queue))
        for name in args.directory:
            printer.directory(await keeper.request(GET_DIRECTORY, {"name": name}))
        for kind, path in getattr(args, "downloads", []):
            assert keeper.client is not None
            uri, content = await keeper.client.download(kind, path)
            printer.download(kind, path, uri, len(content), _save(args, path, content))
    except ClientError as e:
        if not stop.called:
            await keeper.logoff()
            _fail(str(e))
    except BaseException:
        await keeper.logoff()
        raise
    why = await stop
    if why in QUIET_STOPS:
        await keeper.logoff()
    elif why != "ended:logoff":
        _fail(f"the session ended: {why.partition(':')[2]}")


def _save(args: argparse.Namespace, path: str, content: bytes) -> Path:
    """Write a download under --download-dir; a failure is a ClientError (log off, exit 1)."""
    saved = save_name(args.download_dir, path)
    try:
        saved.write_bytes(content)
    except OSError as e:
        raise ClientError("cannot-save", f"{saved}: {e.strerror}") from None
    return saved


async def _log_off(reactor: Any, client: BridgeClient) -> None:
    """DestroySession if a session is open, then close; at most LOGOFF_TIMEOUT."""
    try:
        await client.logoff().addTimeout(LOGOFF_TIMEOUT, reactor)
    except Exception:
        await client.close()


async def _logged_off(reactor: Any, client: BridgeClient) -> None:
    done = client.closed.addTimeout(LOGOFF_TIMEOUT, reactor)
    try:
        await done
    except Exception:
        _fail(f"no answer to DestroySession within {LOGOFF_TIMEOUT}s")


if __name__ == "__main__":
    main()
