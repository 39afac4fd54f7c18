"""Certificate logon through real nginx: the proxy verifies and forwards the certificate.

A certificate nginx finds bad (expired, revoked, from another CA) does not end the
WebSocket handshake: nginx's status 495 is routed to the bridge like a good one
(``error_page 495 496 = @sm_certificate_refused``), which answers ``logon-failed``
with the reason.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from smbridge import pki
from smbridge.client import ClientError, connect
from smbridge.client import ws as client_ws
from smbridge.config import TunnelSettings
from smbridge.notifier.site import Site
from smbridge.session.hook import HookRunner
from smbridge.testing.client_certs import RecordingHook, cert_site_dict, make_cert_pki
from smbridge.tunnel.testing import (
    BASE_MAP,
    NGINX,
    need_binary,
    per_alias_session_ports,
    start_proxied_site,
)

pytestmark = pytest.mark.integration


class CertificateThroughNginx(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        need_binary(NGINX, "nginx")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-cert-nginx-"))
        self.certs = make_cert_pki(self.work / "pki")
        data = cert_site_dict(self.certs)
        data["parameters"] = {**data["parameters"], "SM HTTPS URL Base Map": BASE_MAP}
        self.proxied = yield start_proxied_site(
            reactor,
            self.work,
            site=Site.from_dict(data),
            client_ca=self.certs.ca,
            client_crl=self.certs.crl,
            logon_free_failures=100,
            tunnel=TunnelSettings(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)),
            proxy_options={"client_ca": str(self.certs.ca), "client_crl": str(self.certs.crl)},
        )
        self.addCleanup(self.proxied.stop)
        self.hook = RecordingHook()
        self.proxied.site.bridge.router.hook = HookRunner(self.hook, reactor)

    def dial(self, cert: str | None, path: str = "/extra/path/edge1/session") -> Any:
        files = self.certs.clients[cert] if cert else None
        return connect(
            reactor,
            f"wss://127.0.0.1:{self.proxied.proxy.port}{path}",
            ca=self.certs.ca,
            cert=files.cert if files else None,
            key=files.key if files else None,
        )

    @defer.inlineCallbacks
    def refused(self, cert: str | None, path: str = "/extra/path/edge1/session") -> Any:
        """Dial and log on by certificate; fires with (code, reason) of the refusal."""
        client = yield self.dial(cert, path)
        try:
            with self.assertRaises(ClientError) as raised:
                yield client.logon_certificate()
        finally:
            yield client.close()
        return raised.exception.code, raised.exception.body.get("reason")

    def forge_headers(self, as_cert: str = "agent1") -> None:
        """Every WebSocket handshake from now on carries certificate headers of its own:
        ``as_cert``'s certificate, and nginx's word that it verified."""
        pem = pki.cert_pem(self.certs.clients[as_cert].certificate).decode()
        original = client_ws.BridgeWebSocketFactory.__init__

        def forging(factory: Any, bridge: Any, url: str, client_type: str, r: Any) -> None:
            original(factory, bridge, url, client_type, r)
            factory.headers["X-SSL-Client-Cert"] = quote(pem)
            factory.headers["X-SSL-Client-Verify"] = "SUCCESS"

        self.patch(client_ws.BridgeWebSocketFactory, "__init__", forging)

    def test_rendered_site_asks_for_certificates_and_sets_the_headers(self) -> None:
        """The rendered site asks for optional certificates and always sets both headers:
        at server level, on the session route and on its certificate-refused twin."""
        config = self.proxied.proxy.config
        self.assertIn(f"ssl_client_certificate {self.certs.ca};", config)
        self.assertIn("ssl_verify_client optional;", config)
        self.assertIn(f"ssl_crl {self.certs.crl};", config)
        self.assertIn("error_page 495 496 = @sm_certificate_refused;", config)
        for header in (
            "proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;",
            "proxy_set_header X-SSL-Client-Verify $ssl_client_verify;",
        ):
            self.assertEqual(config.count(header), 3, header)

    def test_the_refused_route_proxies_exactly_like_the_session_route(self) -> None:
        """Both session routes check, route (same backend map, same port) and set headers
        alike: their blocks are the same line for line once the refused one has taken its
        alias from the path and sent non-session paths away."""
        config = self.proxied.proxy.config

        def block(opening: str) -> list[str]:
            start = config.index(opening)
            body = config[start : config.index("\n    }\n", start)].splitlines()[1:]
            return [line.strip() for line in body if not line.strip().startswith("#")]

        normal = block("    location ~* ^/(?:.*/)?(?<sm_server>[^/]+)/session/?$ {")
        refused = block("    location @sm_certificate_refused {")
        self.assertIn(f"proxy_pass https://$sm_backend:{self.proxied.site.wss_port}"
                      "$request_uri;", normal)  # fmt: skip
        self.assertEqual(refused[:4], [
            "set $sm_server $sm_session_alias;",
            'if ($sm_server = "") {',
            'return 400 "client certificate refused ($ssl_client_verify)\\n";',
            "}",
        ])  # fmt: skip
        self.assertEqual(refused[4:], normal)
        # the alias comes from the path by the session location's own pattern
        self.assertIn('"~*^/(?:.*/)?(?<sm_alias>[^/]+)/session/?$" $sm_alias;', config)

    @defer.inlineCallbacks
    def test_refusals_and_passwords_through_nginx(self) -> Any:
        """Every refused certificate gets logon-failed with its reason, those nginx finds
        bad (expired, revoked, another CA) included; passwords work beside them."""
        for cert, reason in [
            ("stranger", "certificate-unknown"),
            (None, "no-certificate"),
            ("expired", "certificate-expired"),
            ("revoked", "certificate-revoked"),
            ("foreign", "certificate-untrusted"),
        ]:
            self.assertEqual((yield self.refused(cert)), ("logon-failed", reason), cert)
        self.assertEqual(self.hook.infos, [])
        client = yield self.dial(None)
        reply = yield client.logon("agent5", "demo")
        self.assertEqual(reply["auth"], "password")
        yield client.close()
        client = yield self.dial("agent2")
        with self.assertRaises(ClientError) as raised:
            yield client.logon("agent2", "demo")
        self.assertEqual(raised.exception.body.get("reason"), "certificate-required")
        yield client.close()

    @defer.inlineCallbacks
    def test_a_refused_certificate_still_gets_a_whole_session(self) -> Any:
        """The 495 route is the session route: an expired certificate's connection logs on
        with a password (as on the bridge's own ports, where the handshake never fails)."""
        client = yield self.dial("expired", "/EDGE1/session/")
        reply = yield client.logon("agent5", "demo")
        self.assertEqual((reply["auth"], reply["user"]["id"]), ("password", "agent5"))
        [info] = self.hook.infos
        self.assertIsNone(info.certificate)
        yield client.close()
        self.assertIn("client SSL certificate verify error", self.proxied.proxy.error_log())

    @defer.inlineCallbacks
    def test_the_refused_route_checks_like_the_session_route(self) -> Any:
        """On the 495 route an unknown alias is 404, and a path that is no session gets 400
        naming nginx's verdict (as before: only the session route is passed on)."""
        for path, status in [("/extra/nosuch/session", "404"), ("/edge1/http/x", "400")]:
            with self.assertRaises(ClientError) as raised:
                yield self.dial("revoked", path)
            self.assertEqual(raised.exception.code, "handshake-refused", path)
            self.assertIn(status, raised.exception.message, path)
        status, body = yield self.https_get("/IC/recorder/x", "expired")
        self.assertEqual(status, 400)
        self.assertIn(b"client certificate refused (FAILED:certificate has expired)", body)
        for cert, verdict in [(None, "NONE"), ("agent1", "SUCCESS")]:  # normal path unchanged
            status, body = yield self.https_get("/IC/recorder/x", cert)
            self.assertEqual(status, 200, body)
            echoed = json.loads(body)
            self.assertEqual((status, echoed["label"], echoed["uri"]), (200, "recorder", "/x"))
            self.assertEqual(echoed["headers"]["x-ssl-client-verify"], verdict)

    @defer.inlineCallbacks
    def test_the_refused_route_goes_to_the_backend_the_path_names(self) -> Any:
        """With the alias IC's session on another backend (the TLS echo server), a request
        with an expired certificate and forged headers for /x/IC/session reaches that
        backend, as the normal route does, with nginx's own certificate headers."""
        import os
        import signal

        proxy = self.proxied.proxy
        echo_port = self.proxied.echo_ports["recordersecure"].getHost().port
        config = per_alias_session_ports(
            proxy.config, self.proxied.site.wss_port, {"IC": echo_port}
        )
        (proxy.directory / "smbridge.conf").write_text(config)
        os.kill(proxy.proc.pid, signal.SIGHUP)  # nginx re-reads its configuration
        forged = {"X-SSL-Client-Cert": "forged", "X-SSL-Client-Verify": "SUCCESS"}

        @defer.inlineCallbacks
        def echoed_by_new_site(cert: str | None) -> Any:
            for _ in range(50):  # bounded: nginx's new workers take over within moments
                status, body = yield self.https_get("/x/IC/session", cert, forged)
                if status == 200:
                    return json.loads(body)
                yield deferLater(reactor, 0.1, lambda: None)
            self.fail(f"/x/IC/session with {cert} never reached the echo server: {body!r}")

        echoed = yield echoed_by_new_site(None)
        self.assertEqual(echoed["label"], "recordersecure")
        self.assertEqual(echoed["headers"]["x-ssl-client-verify"], "NONE")
        self.assertNotIn("x-ssl-client-cert", echoed["headers"])  # empty value: not sent
        echoed = yield echoed_by_new_site("expired")
        self.assertEqual((echoed["label"], echoed["uri"]), ("recordersecure", "/x/IC/session"))
        headers = echoed["headers"]
        self.assertEqual(headers["x-ssl-client-verify"], "FAILED:certificate has expired")
        pem = pki.cert_pem(self.certs.clients["expired"].certificate).decode()
        self.assertEqual(unquote(headers["x-ssl-client-cert"]).strip(), pem.strip())
        self.assertEqual(headers["inin-client-type"], "test")
        # edge1 still goes to the bridge, which names the reason
        self.assertEqual((yield self.refused("expired")), ("logon-failed", "certificate-expired"))

    def https_get(self, path: str, cert: str | None, headers: dict[str, str] | None = None) -> Any:
        """GET ``path`` from nginx with ININ-Client-Type (in a thread); (status, body)."""
        import http.client
        import ssl

        from twisted.internet import threads

        context = ssl.create_default_context(cafile=str(self.certs.ca))
        if cert is not None:
            files = self.certs.clients[cert]
            context.load_cert_chain(files.cert, files.key)

        def get() -> tuple[int, bytes]:
            conn = http.client.HTTPSConnection(
                "localhost", self.proxied.proxy.port, context=context, timeout=10
            )
            try:
                conn.request("GET", path, headers={"ININ-Client-Type": "test", **(headers or {})})
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        return threads.deferToThread(get)

    @defer.inlineCallbacks
    def test_forged_headers_through_nginx_are_replaced(self) -> Any:
        """A client's own X-SSL-Client-Cert (agent1's) and Verify: SUCCESS never reach the
        bridge through nginx, on the normal route or the 495 one."""
        self.forge_headers("agent1")
        for cert, reason in [
            (None, "no-certificate"),
            ("expired", "certificate-expired"),
            ("foreign", "certificate-untrusted"),
            ("stranger", "certificate-unknown"),
        ]:
            self.assertEqual((yield self.refused(cert)), ("logon-failed", reason), cert)
        self.assertEqual(self.hook.infos, [])

    @defer.inlineCallbacks
    def test_forged_headers_straight_to_the_bridge_are_ignored(self) -> Any:
        """Dialling the bridge's wss port from an address that is not the trusted proxy
        (127.0.0.2), forged headers give no certificate logon."""
        self.forge_headers("agent1")
        original = client_ws.HostnameEndpoint

        def from_elsewhere(*args: Any, **kwargs: Any) -> Any:
            return original(*args, bindAddress=("127.0.0.2", 0), **kwargs)

        self.patch(client_ws, "HostnameEndpoint", from_elsewhere)
        client = yield connect(
            reactor,
            f"wss://127.0.0.1:{self.proxied.site.wss_port}/edge1/session",
            ca=self.certs.ca,
            hostname="localhost",
        )
        with self.assertRaises(ClientError) as raised:
            yield client.logon_certificate()
        self.assertEqual(raised.exception.body.get("reason"), "no-certificate")
        yield client.close()
        self.assertEqual(self.proxied.site.bridge.tunnel.factories["wss"].proxy_headers.ignored, 1)
        self.assertEqual(self.hook.infos, [])

    @defer.inlineCallbacks
    def test_the_bridge_rechecks_what_nginx_passes(self) -> Any:
        """With optional_no_ca nginx passes another CA's certificate on; the bridge refuses it."""
        from smbridge.tunnel.nginx import ProxySite

        self.assertEqual(ProxySite("c", "k", "ca", ()).client_verify, "optional")
        proxy = self.proxied.proxy
        conf = proxy.directory / "smbridge.conf"
        conf.write_text(proxy.config.replace("optional;", "optional_no_ca;"))
        import os
        import signal

        os.kill(proxy.proc.pid, signal.SIGHUP)  # nginx re-reads its configuration

        def passes_foreign() -> Any:
            return self.dial("foreign").addCallbacks(lambda client: client, lambda failure: None)

        client = None
        for _ in range(50):  # bounded: nginx's new workers take over within moments
            client = yield passes_foreign()
            if client is not None:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertIsNotNone(client)
        with self.assertRaises(ClientError) as raised:
            yield client.logon_certificate()
        self.assertEqual(raised.exception.body.get("reason"), "certificate-untrusted")
        yield client.close()
