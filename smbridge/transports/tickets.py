"""TLS session tickets on the wire: which key a returning client's ticket was sealed with.

Pure functions over TLS records (RFC 8446 §4.1.2, §4.2.11; RFC 5077 §3.2), no I/O.
OpenSSL seals a ticket as ``key_name (16 bytes) | IV | ciphertext | HMAC``; the key
name is random per ``SSL_CTX``. :mod:`smbridge.transports.resumption` keeps a few
contexts (key generations) and uses :func:`hello_key_name` to hand a connection to the
one whose key sealed the client's ticket, and :func:`issued_key_name` to learn each
context's key name once, from a ticket it issues in a TLS 1.2 handshake (whose
NewSessionTicket travels in clear).
"""

from __future__ import annotations

RECORD_HEADER = 5
HANDSHAKE = 0x16
CLIENT_HELLO = 1
NEW_SESSION_TICKET = 4
EXT_SESSION_TICKET = 35  # TLS 1.2 (RFC 5077)
EXT_PRE_SHARED_KEY = 41  # TLS 1.3: the identity is the ticket
KEY_NAME_LENGTH = 16
MAX_HELLO_RECORD = 16384  # a record larger than this is not a ClientHello we route


def first_record(data: bytes) -> int:
    """Bytes needed for the first TLS record: its length once known, else the header's.

    Returns 0 when ``data`` does not start a handshake record (nothing to route on).
    """
    if not data or data[0] != HANDSHAKE:
        return 0
    if len(data) < RECORD_HEADER:
        return RECORD_HEADER
    length = int.from_bytes(data[3:5], "big")
    return RECORD_HEADER + length if length <= MAX_HELLO_RECORD else 0


def hello_key_name(record: bytes) -> bytes | None:
    """The key name of the ticket a ClientHello record offers (TLS 1.3 PSK first), or None."""
    body = record[RECORD_HEADER:]
    if len(record) < RECORD_HEADER or record[0] != HANDSHAKE or not body:
        return None
    if body[0] != CLIENT_HELLO:
        return None
    try:
        end = min(len(body), 4 + int.from_bytes(body[1:4], "big"))
        pos = 4 + 2 + 32  # type, length, legacy_version, random
        pos += 1 + body[pos]  # legacy_session_id
        pos += 2 + int.from_bytes(body[pos : pos + 2], "big")  # cipher_suites
        pos += 1 + body[pos]  # legacy_compression_methods
        ext_end = min(end, pos + 2 + int.from_bytes(body[pos : pos + 2], "big"))
        pos += 2
        found: bytes | None = None
        while pos + 4 <= ext_end:
            kind = int.from_bytes(body[pos : pos + 2], "big")
            size = int.from_bytes(body[pos + 2 : pos + 4], "big")
            data = body[pos + 4 : pos + 4 + size]
            pos += 4 + size
            if kind == EXT_PRE_SHARED_KEY and len(data) >= 4:
                identity = int.from_bytes(data[2:4], "big")
                return _name(data[4 : 4 + identity])
            if kind == EXT_SESSION_TICKET:
                found = _name(data)
        return found
    except IndexError:
        return None


def issued_key_name(records: bytes) -> bytes | None:
    """The key name of the first NewSessionTicket in clear-text handshake records, or None."""
    pos = 0
    while pos + RECORD_HEADER <= len(records):
        kind = records[pos]
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        fragment = records[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind != HANDSHAKE:
            continue
        at = 0
        while at + 4 <= len(fragment):
            msg, size = fragment[at], int.from_bytes(fragment[at + 1 : at + 4], "big")
            if msg == NEW_SESSION_TICKET:
                ticket = fragment[at + 4 + 4 + 2 : at + 4 + size]  # lifetime, length
                return _name(ticket)
            at += 4 + size
    return None


def _name(ticket: bytes) -> bytes | None:
    return ticket[:KEY_NAME_LENGTH] if len(ticket) >= KEY_NAME_LENGTH else None
