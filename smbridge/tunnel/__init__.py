"""The WebSocket tunnel (PROTOCOL §1): session URIs, Table 8 resource URIs, the listeners.

- ``route``: decoding a session URI and the ``SM HTTPS URL Base Map`` alias map (pure).
- ``uris``: the resource URIs a session is given (pure; a ``ResourceProvider``).
- ``tunnel``: the Autobahn-on-Twisted listeners feeding the client connection.
- ``nginx``: rendering the nginx site (``nginx.conf.in``, package data) for a site (pure).
"""
