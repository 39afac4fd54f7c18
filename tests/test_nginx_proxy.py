"""Debian's nginx on the rendered site, in front of a real bridge and a real Notifier."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import treq
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from smbridge import pki
from smbridge.client import ClientError, connect
from smbridge.config import TunnelSettings
from smbridge.notifier.demo import demo_site
from smbridge.notifier.resources import STATUS_COLOURS, png
from smbridge.pki import MOZILLA_INTERMEDIATE_CIPHERS
from smbridge.testing import http_json, start_site
from smbridge.tunnel.nginx import TEMPLATE, ProxySite, backends_from_map, main, render
from smbridge.tunnel.testing import (
    NGINX,
    need_binary,
    poll,
    start_proxied_site,
    start_proxy,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


class ThroughNginx(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self):
        need_binary(NGINX, "nginx")
        self.work = Path(tempfile.mkdtemp(prefix="smbridge-nginx-"))
        self.proxied = yield start_proxied_site(
            reactor,
            self.work,
            ws_timeout="3s",
            tunnel=TunnelSettings(ping_interval=1, ping_timeout=10),
        )
        self.addCleanup(self.proxied.stop)
        self.site = self.proxied.site
        self.proxy = self.proxied.proxy
        yield http_json(
            reactor, "POST", f"{self.site.control_url}/api/traffic", {"callsPerSecond": 0}
        )

    def connect(self, path: str = "/extra/path/edge1/session"):
        return connect(reactor, f"wss://127.0.0.1:{self.proxy.port}{path}", ca=self.site.pki.ca)

    @defer.inlineCallbacks
    def get(self, path: str, headers: dict[str, str] | None = None):
        """GET through the proxy, trusting the site's CA; fires with (status, body)."""
        policy = BrowserLikePolicyForHTTPS(trustRoot=pki.load_ca(self.site.pki.ca))
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, contextFactory=policy, pool=pool)
        client = treq.client.HTTPClient(agent)
        response = yield client.get(f"{self.proxy.base}{path}", headers=headers or {})
        body = yield response.content()
        return response.code, body

    @defer.inlineCallbacks
    def test_logon_through_nginx_watch_and_download(self):
        """Over wss through nginx: the bridge sees the public base URI and alias; events and
        Table 8 downloads flow."""
        client = yield self.connect()
        reply = yield client.logon("agent1", "demo")
        base = f"https://127.0.0.1:{self.proxy.port}/extra/path"
        self.assertEqual((reply["resources"]["base"], reply["resources"]["server"]), (base, "IC"))
        self.assertNotIn("cic1", json.dumps(reply["resources"]))
        (session,) = list(self.site.bridge.registry)
        self.assertEqual(
            (session.origin.transport, session.origin.base_uri, session.origin.server),
            ("wss", base, "edge1"),
        )
        self.assertEqual(session.origin.alias, "edge1")
        events = []
        client.add_listener(lambda name, frame: events.append((name, frame.parsed())))
        snapshot = yield client.watch_queue("Sales")
        self.assertEqual(snapshot["queue"], "Sales")
        yield self.site.publish_queue(reactor, "Sales", [{"id": "call-9"}])
        yield poll(reactor, lambda: events, "QueueChanged")
        self.assertEqual(events[0][0], "QueueChanged")
        self.assertEqual(events[0][1]["added"][0]["id"], "call-9")
        uri, content = yield client.download("httpsecure", "status-icons/Do Not Disturb.png")
        self.assertEqual(uri, f"{base}/IC/httpsecure/status-icons/Do%20Not%20Disturb.png")
        self.assertEqual(content, png(STATUS_COLOURS["Do Not Disturb"]))
        uri, content = yield client.download("http", "responses/greetings.xml")
        self.assertEqual(uri, f"{base}/IC/http/responses/greetings.xml")
        self.assertIn(b"<responses>", content)
        yield client.logoff()

    @defer.inlineCallbacks
    def test_table_8_routes_reach_their_ports(self):
        """Each Table 8 route reaches its port with /additional intact (escapes and query too)."""
        header = {"ININ-Client-Type": "test"}
        for kind in ("recorder", "recordersecure", "dialer", "dialersecure"):
            status, body = yield self.get(f"/x/IC/{kind}/a%20b/c.txt?q=1&r=%2F", header)
            echoed = json.loads(body)
            self.assertEqual((status, echoed["label"]), (200, kind))
            self.assertEqual(echoed["uri"], "/a%20b/c.txt?q=1&r=%2F")
            self.assertEqual(echoed["headers"]["inin-client-type"], "test")
            self.assertEqual(echoed["headers"]["x-forwarded-proto"], "https")
        for kind, _label in (
            ("http", b"http"),
            ("httpsecure", b"https"),
            ("reporting", b"https"),
        ):
            status, body = yield self.get(f"/IC/{kind}/version.txt", header)
            self.assertEqual((status, body), (200, b"smbridge reference Notifier resource host\n"))
        status, _ = yield self.get("/ic/HTTPSECURE/status-icons/Away.png", header)
        self.assertEqual(status, 200)

    @defer.inlineCallbacks
    def test_proxy_refusals(self):
        """Without ININ-Client-Type: 403; a private name or unknown alias: 404, at the proxy."""
        header = {"ININ-Client-Type": "test"}
        status, body = yield self.get("/IC/httpsecure/version.txt")
        self.assertEqual((status, body), (403, b"ININ-Client-Type header required\n"))
        status, _ = yield self.get("/IC/httpsecure/version.txt?inin_client_type=web")
        self.assertEqual(status, 200)
        for path in ("/cic1/httpsecure/version.txt", "/nobody/http/x", "/sm1/session"):
            status, body = yield self.get(path, header)
            self.assertEqual((status, body), (404, b"unknown server\n"))
        status, _ = yield self.get("/anything/else", header)
        self.assertEqual(status, 404)
        with self.assertRaises(ClientError) as caught:
            yield self.connect("/extra/path/cic1/session")
        self.assertEqual(caught.exception.body["status"], 404)
        with self.assertRaises(ClientError) as caught:
            yield connect(
                reactor,
                f"wss://127.0.0.1:{self.proxy.port}/IC/session",
                ca=self.site.pki.ca,
                client_type="",
            )
        self.assertEqual(caught.exception.body["status"], 403)

    @defer.inlineCallbacks
    def test_bridge_refusal_comes_back_through_nginx(self):
        """A path nginx routes but the bridge refuses (a dot segment) returns the bridge's 400."""
        with self.assertRaises(ClientError) as caught:
            yield self.connect("/a/%2e%2e/edge1/session")
        self.assertEqual(caught.exception.body["status"], 400)
        self.assertIn("dot segments", caught.exception.body["reason"])

    @defer.inlineCallbacks
    def test_pings_outlast_the_proxy_read_timeout(self):
        """With nginx's read timeout at 3 s, a pinged idle session lives on; without pings
        the same proxy cuts an idle one."""
        kept = yield self.connect()
        yield kept.logon("agent2", "demo")
        kept_idle_since = time.monotonic()
        factory = self.site.bridge.tunnel.factories["wss"]
        factory.setProtocolOptions(autoPingInterval=0, autoPingTimeout=0)  # new ones: no pings
        quiet = yield self.connect()
        yield quiet.logon("agent3", "demo")
        started = time.monotonic()
        yield quiet.closed
        cut_after = time.monotonic() - started
        self.assertGreater(cut_after, 2.5)
        yield task.deferLater(reactor, 3.0, lambda: None)  # the kept one idles past 2x timeout
        self.assertGreater(time.monotonic() - kept_idle_since, 6)
        beat = yield kept.heartbeat()
        self.assertEqual(beat["sessionUpdated"], True)
        self.assertIn("upstream timed out", self.proxy.error_log())
        yield kept.logoff()


class DemoThroughNginx(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def test_demo_alias_map_serves_the_proxied_path_as_is(self):
        """The demo site's own SM HTTPS URL Base Map, rendered unchanged, takes a client
        through nginx to the bridge (the web client's default alias IC) and its resources."""
        nginx = need_binary(NGINX, "nginx")
        work = Path(tempfile.mkdtemp(prefix="smbridge-nginx-demo-"))
        demo = demo_site(bridge_name="sm1")  # start_site's bridge is sm1
        base_map = demo.parameters["SM HTTPS URL Base Map"]
        site = yield start_site(reactor, work, site=demo, wss_port=0, resources=True)
        self.addCleanup(site.stop)
        proxy = yield start_proxy(
            reactor,
            work,
            site.pki.ca.parent,
            {"cic1": "127.0.0.1,localhost", "sm1": "127.0.0.1,localhost"},
            base_map,
            {"http": site.http_port, "httpsecure": site.https_port},
            site.wss_port,
            nginx=nginx,
        )
        self.addCleanup(proxy.stop)
        client = yield connect(reactor, f"wss://127.0.0.1:{proxy.port}/IC/session", ca=site.pki.ca)
        yield client.logon("agent1", "demo")
        uri, content = yield client.download("httpsecure", "version.txt")
        self.assertEqual(uri, f"https://127.0.0.1:{proxy.port}/127.0.0.1/httpsecure/version.txt")
        self.assertEqual(content, b"smbridge reference Notifier resource host\n")
        yield client.logoff()


# Mozilla "intermediate" for the site's ECDSA certificate: the ECDHE-ECDSA suites of the
# bridge's list for TLS 1.2, OpenSSL's three TLS 1.3 suites, and three groups.
TLS12_ECDSA = {s for s in MOZILLA_INTERMEDIATE_CIPHERS.split(":") if "-ECDSA-" in s}
TLS13 = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
CURVES = {"X25519", "secp256r1", "secp384r1"}


def sslyze_binary() -> str:
    """sslyze from its own environment (.venv-tools: it pins an older cryptography)."""
    tool = ROOT / ".venv-tools" / "bin" / "sslyze"
    found = str(tool) if tool.exists() else shutil.which("sslyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("sslyze is missing: `make test` installs it in .venv-tools")
        pytest.skip("sslyze is not installed (make .venv-tools/.installed)")
    return found


class SiteTLS(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_sslyze_finds_exactly_mozilla_intermediate(self):
        """sslyze finds the rendered site Mozilla-intermediate compliant, accepting exactly the
        intermediate suites and curves (no CBC, CCM, ARIA, CAMELLIA, X448 or P-521)."""
        sslyze = sslyze_binary()
        nginx = need_binary(NGINX, "nginx")
        work = Path(tempfile.mkdtemp(prefix="smbridge-nginx-tls-"))
        files = pki.ensure_site_pki(work / "pki")
        proxy = yield start_proxy(
            reactor,
            work,
            files.ca.parent,
            {"cic1": "127.0.0.1,localhost"},
            "cic1|IC",
            {},
            8952,
            nginx=nginx,
        )
        self.addCleanup(proxy.stop)
        out = work / "scan.json"
        cmd = [sslyze, "--mozilla_config=intermediate", f"--certinfo_ca_file={files.ca}"]
        done = yield threads.deferToThread(
            subprocess.run,
            [*cmd, f"--json_out={out}", f"127.0.0.1:{proxy.port}"],
            capture_output=True,
            timeout=100,
        )
        self.assertIn(b"OK - Compliant.", done.stdout, done.stdout[-1500:])
        self.assertEqual(done.returncode, 0)
        (scan,) = json.loads(out.read_text())["server_scan_results"]
        result = scan["scan_result"]

        def accepted(version: str) -> set[str]:
            suites = result[f"{version}_cipher_suites"]["result"]["accepted_cipher_suites"]
            return {s["cipher_suite"]["openssl_name"] for s in suites}

        for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
            self.assertEqual(accepted(old), set(), old)
        self.assertEqual(accepted("tls_1_2"), TLS12_ECDSA)
        self.assertEqual(accepted("tls_1_3"), TLS13)
        curves = {c["name"] for c in result["elliptic_curves"]["result"]["supported_curves"]}
        self.assertEqual(curves, CURVES)


def test_rendered_template_passes_nginx_check(tmp_path: Path) -> None:
    """The repository's template, rendered for a two-machine site, passes ``nginx -t``."""
    nginx = need_binary(NGINX, "nginx")
    files = pki.ensure_site_pki(tmp_path / "pki")
    site = ProxySite(
        certificate=str(files.bridge),
        certificate_key=str(files.bridge),
        internal_ca=str(files.ca),
        backends=backends_from_map(
            "ICServer1234|IC&ossm1|edge1",
            {"ICServer1234": "10.0.0.40", "ossm1": "10.0.0.41"},
        ),
        listen="127.0.0.1:8443",
    )
    conf = tmp_path / "smbridge.conf"
    conf.write_text(render(TEMPLATE.read_text(), site))
    assert '"~*^IC$" 10.0.0.40;' in conf.read_text()
    assert "ICServer1234" in conf.read_text()  # only as a certificate name...
    assert "/ICServer1234/" not in conf.read_text()  # ...never in a route
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid; error_log stderr; events {{}} http {{ include {conf}; }}\n"
    )
    check = subprocess.run(
        [nginx, "-p", str(tmp_path), "-c", str(main), "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr


def test_renderer_command_line(tmp_path: Path) -> None:
    """``python -m smbridge.tunnel.nginx`` writes the site; a map entry without an alias fails."""
    args = [
        sys.executable,
        "-m",
        "smbridge.tunnel.nginx",
        "--base-map",
        "cic1|IC",
        "--backend",
        "cic1=10.0.0.40,cic1.corp",
        "--cert",
        "/etc/ssl/proxy.pem",
        "--key",
        "/etc/ssl/proxy.key",
        "--internal-ca",
        "/etc/smbridge/ca.pem",
    ]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert '"~*^IC$" cic1.corp;' in done.stdout
    assert "listen 443 ssl;" in done.stdout
    bad = subprocess.run([*args, "--backend", "other=10.0.0.9"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "other has no alias in the map" in bad.stderr


@pytest.mark.parametrize(
    "field",
    ["listen", "server_name", "certificate"],
)
def test_renderer_refuses_injection(field: str) -> None:
    """A value with a space, brace or semicolon cannot reach the configuration."""
    values = {
        "certificate": "/c.pem",
        "certificate_key": "/k.pem",
        "internal_ca": "/ca.pem",
        "backends": backends_from_map("m|A", {"m": "10.0.0.1"}),
        field: "x; include /etc/passwd",
    }
    with pytest.raises(ValueError, match="not allowed"):
        render(TEMPLATE.read_text(), ProxySite(**values))


def test_missing_binary_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing nginx or chromium skips the test with the reason, unless CI is set."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-nginx is not installed"):
        need_binary("/nonexistent/no-such-nginx", "no-such-nginx")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs it"):
        need_binary("/nonexistent/no-such-nginx", "no-such-nginx")


def test_renderer_refuses_unknown_kinds_and_bad_ports() -> None:
    """A port for a kind not in Table 8, or outside 1..65535, is refused by render and main."""
    values = {
        "certificate": "/c.pem",
        "certificate_key": "/k.pem",
        "internal_ca": "/ca.pem",
        "backends": backends_from_map("m|A", {"m": "10.0.0.1"}),
    }
    with pytest.raises(ValueError, match="unknown resource kinds: chat"):
        render(TEMPLATE.read_text(), ProxySite(**values, ports={"chat": 1}))
    with pytest.raises(ValueError, match="not between 1 and 65535"):
        render(TEMPLATE.read_text(), ProxySite(**values, session_port=70000))
    args = ["--base-map", "m|A", "--backend", "m=10.0.0.1", "--cert", "/c", "--key", "/k"]
    for bad in (["--port", "chat=1"], ["--port", "dialer=0"], ["--session-port", "x"]):
        with pytest.raises(SystemExit):
            main([*args, "--internal-ca", "/ca", *bad])
