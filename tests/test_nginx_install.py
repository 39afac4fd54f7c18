"""The nginx renderer works from an installed wheel, away from the checkout."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from smbridge.tunnel.uris import KINDS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ("pyproject.toml", "setup.cfg", "README.md", "smbridge", "twisted")


def run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def test_renderer_from_an_installed_wheel(tmp_path: Path) -> None:
    """A wheel built from the project carries the template: installed in a fresh venv,
    ``python -m smbridge.tunnel.nginx`` prints its help and renders a site with every port
    set from the command line."""
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in PACKAGING:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif item.exists():
            shutil.copy2(item, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], tmp_path)
    (wheel,) = wheels.glob("smbridge-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], tmp_path)
    # The dependencies come from the project's venv; its editable smbridge does not (a .pth
    # line adds a directory to sys.path without reading the .pth files in it).
    purelib = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
        ).stdout.strip()
    )
    (purelib / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run(
        [str(python), "-c", "import smbridge.tunnel.nginx as n; print(n.TEMPLATE)"], tmp_path
    )
    template = Path(where.stdout.strip())
    assert template.is_relative_to(venv) and template.is_file(), template

    helped = run([str(python), "-m", "smbridge.tunnel.nginx", "--help"], tmp_path)
    for flag in ("--session-port", "--port KIND=PORT", "--base-map", "--template"):
        assert flag in helped.stdout
    ports = {kind: 9000 + i for i, kind in enumerate(KINDS)}
    argv = [
        str(python),
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
    ]
    site = run(argv, tmp_path).stdout
    assert "proxy_pass https://$sm_backend:9952$request_uri;" in site
    for kind, port in ports.items():
        scheme = "https" if KINDS[kind].secure else "http"
        assert f'/{kind}/(.*)$" /$1 break;\n        proxy_pass {scheme}://$sm_backend:{port};' in (
            site
        ), kind
    assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in site
    assert not re.search(r"@[A-Z0-9_]+@", site)  # every field filled
    assert str(ROOT) not in site  # nothing points back into the checkout
