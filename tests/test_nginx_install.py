"""The package works installed from its wheel, away from the checkout (issue 17: 3).

One module-scoped build: ``python -m build`` (the ``build`` front end from PyPI, in a
venv of its own) makes the sdist and then the wheel *from that sdist*, so a file the
sdist forgets is missing from the wheel too. The wheel goes into a fresh venv outside
the checkout with ``--no-deps``; the dependencies come from the project's venv through a
``.pth`` line (a directory on sys.path, without reading the .pth files in it, so the
checkout's editable smbridge stays out). Every command runs with its working directory
outside the checkout and no PYTHONPATH: ``twistd smbridge --demo`` with a logon through
the installed ``smbridge client``, ``smbridge certs``, ``smbridge sizing`` and the nginx
renderer ``python -m smbridge.tunnel.nginx``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from smbridge.tunnel.uris import KINDS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
# What the sdist is made from: the packaging files, the code, and what the install
# steps of docs/operations.md copy from the unpacked sdist (deploy/, docs/).
PACKAGING = (
    "pyproject.toml",
    "setup.cfg",
    "MANIFEST.in",
    "README.md",
    "smbridge",
    "twisted",
    "deploy",
    "docs",
)
DEMO_PORTS = ("port", "notifier-port", "control-port", "admin-port", "ws-port", "wss-port")
DEMO_PORTS += ("notifier-http-port", "notifier-https-port")


@dataclass(frozen=True)
class Installed:
    """The built distributions and the venv the wheel is installed in."""

    sdist: Path
    wheel: Path
    venv: Path
    home: Path  # an empty working directory outside the checkout
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run([self.bin(argv[0]), *argv[1:]], self.home, self.env, timeout)


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def poll(
    predicate: Callable[[], object],
    what: str,
    deadline: float,
    proc: subprocess.Popen[bytes],
    log: Path,
) -> None:
    """Wait until ``predicate()`` holds; fail at the deadline or if ``proc`` exits first."""
    end = time.monotonic() + deadline
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {what}:\n{log.read_text()}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {deadline}s:\n{log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the sdist and the wheel once and install the wheel in a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel-install")
    assert not tmp.is_relative_to(ROOT)
    source = tmp / "src"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in PACKAGING:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(
                item, source / name, ignore=shutil.ignore_patterns("__pycache__", "dropin.cache")
            )
        elif item.exists():
            shutil.copy2(item, source / name)
    pip = ["--disable-pip-version-check", "-q"]
    tools = tmp / "tools"
    run([sys.executable, "-m", "venv", str(tools)], tmp)
    run([str(tools / "bin" / "pip"), *pip, "install", "build"], tmp)
    dist = tmp / "dist"
    run([str(tools / "bin" / "python"), "-m", "build", "-o", str(dist), str(source)], tmp)
    (sdist,) = dist.glob("smbridge-*.tar.gz")
    (wheel,) = dist.glob("smbridge-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = str(venv / "bin" / "python")
    run(
        [sys.executable, "-m", "pip", *pip, "--python", python, "install", "--no-deps", str(wheel)],
        tmp,
    )
    purelib = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp
    ).stdout.strip()
    (Path(purelib) / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # Twisted's own console script, as `pip install twisted` would have put it in the venv.
    twistd = venv / "bin" / "twistd"
    twistd.write_text(
        f"#!{python}\nimport sys\nfrom twisted.scripts.twistd import run\nsys.exit(run())\n"
    )
    twistd.chmod(0o755)
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1")
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield Installed(sdist, wheel, venv, home, env)


def shipped(root: Path) -> set[str]:
    """The files of the project's packages that an installation needs (no caches or JS tests)."""
    return {
        str(path.relative_to(ROOT))
        for top in ("smbridge", "twisted/plugins")
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and "tests" not in path.relative_to(ROOT).parts
        and path.suffix != ".pyc"
        and path.name != "dropin.cache"  # Twisted's plugin cache, written at run time
    }


def test_wheel_and_sdist_carry_every_file(installed: Installed) -> None:
    """The wheel has every module, template, web file and the Twisted plugin; the sdist also
    has deploy/ and docs/ for the install steps."""
    wheel = set(zipfile.ZipFile(installed.wheel).namelist())
    missing = shipped(ROOT) - wheel
    assert not missing, sorted(missing)
    for name in ("twisted/plugins/smbridge_plugins.py", "smbridge/tunnel/nginx.conf.in"):
        assert name in wheel
    assert not any(name.startswith("twisted/plugins/__init__") for name in wheel)
    tops = {name.split("/", 1)[0] for name in wheel}
    assert tops == {"smbridge", "twisted", installed.wheel.name.split("-py3")[0] + ".dist-info"}
    entry = next(n for n in wheel if n.endswith(".dist-info/entry_points.txt"))
    assert "smbridge = smbridge.cli:main" in zipfile.ZipFile(installed.wheel).read(entry).decode()

    with tarfile.open(installed.sdist) as tar:
        prefix = installed.sdist.name.removesuffix(".tar.gz") + "/"
        sdist = {name.removeprefix(prefix) for name in tar.getnames()}
    missing = shipped(ROOT) - sdist
    assert not missing, sorted(missing)
    for name in (
        "deploy/smbridge.service",
        "deploy/bridge.example.yaml",
        "deploy/nginx/smbridge.conf.in",
        "docs/operations.md",
    ):
        assert name in sdist, name
    assert not any("__pycache__" in name for name in sdist)


def test_installed_package_is_the_one_imported(installed: Installed) -> None:
    """From the venv, smbridge and its Twisted plugin load from the venv, never the checkout."""
    probe = (
        "import importlib, os, sys, smbridge, twisted.plugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "from twisted.plugin import getPlugins\n"
        "makers = {m.tapname: m.module for m in getPlugins(IServiceMaker)}\n"
        "print(smbridge.__file__)\n"
        "print(importlib.import_module(makers['smbridge']).__file__)\n"
        "print(importlib.import_module(makers['notifier']).__file__)\n"
        "for d in twisted.plugins.__path__:\n"
        "    if os.path.exists(os.path.join(d, 'smbridge_plugins.py')): print(d)\n"
        "print('--'); print('\\n'.join(sys.path))\n"
    )
    out = installed.run("python", "-c", probe).stdout
    found, path = out.split("--\n")
    lines = found.splitlines()
    assert len(lines) == 4, lines  # the smbridge plugin file is found in one place: the venv
    for where in lines:
        assert Path(where).is_relative_to(installed.venv), where
    deps = Path(sysconfig.get_path("purelib")).resolve()  # the dependencies, under ROOT/.venv
    for entry in filter(None, path.splitlines()):
        resolved = Path(entry).resolve()
        assert resolved == deps or not resolved.is_relative_to(ROOT), entry


def test_demo_runs_from_the_installed_package(installed: Installed) -> None:
    """``twistd -n smbridge --demo`` from the venv gets to "Demo ready", the installed
    client logs on over TLS and is told "shutdown" when twistd stops cleanly."""
    work = installed.home / "demo"
    log = installed.home / "twistd.log"
    argv = [installed.bin("twistd"), "-n", "--pidfile=", "smbridge", "--demo"]
    argv += [a for flag in DEMO_PORTS for a in (f"--{flag}", "0")]
    argv += ["--work-path", str(work)]
    with log.open("wb") as out:
        bridge = subprocess.Popen(
            argv, cwd=installed.home, env=installed.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        poll(lambda: "Demo ready" in log.read_text(), "Demo ready", 60, bridge, log)
        ports = json.loads((work / "ports.json").read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/api/status") as answer:
            assert json.load(answer)["name"] == "bridge1"

        client_log = installed.home / "client.log"
        client_argv = [installed.bin("smbridge"), "client", "--user", "supervisor1"]
        client_argv += ["--ca", str(work / "pki" / "ca.pem"), "--json"]
        client_argv += ["--watch", "queue:Support", "--directory", "Company Directory"]
        client_argv += [f"tls://localhost:{ports['client']}"]
        with client_log.open("wb") as out:
            client = subprocess.Popen(
                client_argv,
                cwd=installed.home,
                env={**installed.env, "SMBRIDGE_PASSWORD": "demo"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            poll(
                lambda: "Company Directory" in client_log.read_text(),
                "a directory",
                30,
                client,
                client_log,
            )
            bridge.send_signal(signal.SIGTERM)
            assert client.wait(timeout=30) == 1  # the session ended by the bridge
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        # twistd ends itself with the signal it stopped for, after a clean shutdown.
        assert bridge.wait(timeout=30) == -signal.SIGTERM, log.read_text()
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    lines = client_log.read_text().splitlines()
    events = {e["event"]: e["payload"] for e in map(json.loads, filter(is_json, lines))}
    assert events["CreateSession"]["user"]["id"] == "supervisor1"
    assert events["WatchQueue"]["queue"] == "Support"
    assert "supervisor1" in {entry["id"] for entry in events["GetDirectory"]["entries"]}
    assert events["SessionTerminated"] == {"reason": "shutdown"}
    bridge_log = log.read_text()
    assert "Server Shut Down." in bridge_log and "Traceback" not in bridge_log


def is_json(line: str) -> bool:
    return line.startswith("{")


def test_certs_from_the_installed_command(installed: Installed) -> None:
    """``smbridge certs`` from the venv makes a site CA, a server, a bridge client and a
    listener certificate, each signed by that CA."""
    out = installed.home / "pki"
    installed.run(
        "smbridge",
        "certs",
        "--out",
        str(out),
        "--new-ca",
        "--server",
        "cic1.example.com",
        "--bridge",
        "bridge1",
        "--listener",
        "bridge1.example.com",
    )
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    for name in ("cic1.example.com", "bridge1-client", "bridge1.example.com"):
        cert = x509.load_pem_x509_certificate((out / f"{name}.pem").read_bytes())
        assert cert.issuer == ca.subject, name
        cert.verify_directly_issued_by(ca)
        assert (out / f"{name}.key").stat().st_mode & 0o777 == 0o600, name
    names = x509.load_pem_x509_certificate((out / "bridge1.example.com.pem").read_bytes())
    san = names.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "bridge1.example.com" in san.get_values_for_type(x509.DNSName)


def test_sizing_from_the_installed_command(installed: Installed) -> None:
    """``smbridge sizing`` from the venv prints the N+1 bridge counts per location and in total."""
    table = installed.run(
        "smbridge", "sizing", "--location", "hq=3000,1200", "--location", "branch=50,20"
    ).stdout
    rows = {line[:22].strip(): line.split() for line in table.splitlines()[1:]}
    assert rows["hq"][1:] == ["3000", "1200", "3"]
    assert rows["branch"][1:] == ["50", "20", "2"]
    assert rows["sum per location"][-1] == "5"
    assert rows["all locations as one"][-3:] == ["3050", "1220", "3"]


def test_renderer_from_an_installed_wheel(installed: Installed) -> None:
    """The wheel carries the nginx template: from the venv, ``python -m smbridge.tunnel.nginx``
    prints its help and renders a site with every port set from the command line."""
    where = installed.run("python", "-c", "import smbridge.tunnel.nginx as n; print(n.TEMPLATE)")
    template = Path(where.stdout.strip())
    assert template.is_relative_to(installed.venv) and template.is_file(), template

    helped = installed.run("python", "-m", "smbridge.tunnel.nginx", "--help")
    for flag in ("--session-port", "--port KIND=PORT", "--base-map", "--template"):
        assert flag in helped.stdout
    ports = {kind: 9000 + i for i, kind in enumerate(KINDS)}
    site = installed.run(
        "python",
        "-m",
        "smbridge.tunnel.nginx",
        "--base-map",
        "cic1|IC&sm1|edge1",
        "--backend",
        "cic1=10.0.0.40,cic1.corp",
        "--backend",
        "sm1=10.0.0.41",
        "--cert",
        "/etc/ssl/proxy.pem",
        "--key",
        "/etc/ssl/proxy.key",
        "--internal-ca",
        "/etc/smbridge/ca.pem",
        "--session-port",
        "9952",
        *[f"--port={kind}={port}" for kind, port in ports.items()],
    ).stdout
    assert "proxy_pass https://$sm_backend:9952$request_uri;" in site
    for kind, port in ports.items():
        scheme = "https" if KINDS[kind].secure else "http"
        assert f'/{kind}/(.*)$" /$1 break;\n        proxy_pass {scheme}://$sm_backend:{port};' in (
            site
        ), kind
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in site
    assert not re.search(r"@[A-Z0-9_]+@", site)  # every field filled
    assert str(ROOT) not in site  # nothing points back into the checkout


def test_operations_install_steps_name_what_the_build_makes(installed: Installed) -> None:
    """docs/operations.md installs the wheel the build makes, from the sdist it makes, into the
    venv whose twistd the unit's ExecStart runs."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    install = doc.split("## Installing", 1)[1].split("\n## ", 1)[0]
    assert f"/opt/smbridge/bin/pip install ../{installed.wheel.name}" in install
    assert f"tar xzf {installed.sdist.name} && cd {installed.sdist.name[: -len('.tar.gz')]}" in (
        install
    )
    assert "python -m build" in install and "pip install smbridge\n" not in install
    unit = (ROOT / "deploy" / "smbridge.service").read_text()
    assert "ExecStart=/opt/smbridge/bin/twistd " in unit
    assert (installed.venv / "bin" / "smbridge").is_file()  # the console script, as in /opt
