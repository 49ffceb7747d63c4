"""The nginx role's private CA, on the controller only (no host needed): created once, a
host certificate signed by it with the names and addresses asked for, nothing changed on a
re-run, a new certificate when it is within 30 days of expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import ANSIBLE_DIR, REPO, clean_env

PLAYBOOK = """\
- name: The nginx role's controller side, for one made-up host
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Private CA and host certificate
      ansible.builtin.include_role:
        name: nginx
        tasks_from: tls_private_ca.yml
"""


def _run(tmp: Path, **extra: object) -> dict[str, int]:
    playbook = tmp / "ca.yml"
    playbook.write_text(PLAYBOOK)
    variables = {
        "nginx_tls_ca_dir": str(tmp / "credentials"),
        "nginx_tls_sans": ["DNS:localhost", "DNS:api1.example", "IP:10.0.0.5", "IP:::1"],
        **extra,
    }
    env = clean_env()
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE_DIR / "roles")
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,",
         "-e", json.dumps(variables), str(playbook)],
        cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"^localhost\s+:\s+(ok=.*)$", proc.stdout, re.MULTILINE)
    assert recap, proc.stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_private_ca_signs_the_host_certificate_once_and_renews_near_expiry(
    tmp_path: Path,
) -> None:
    creds = tmp_path / "credentials"
    assert _run(tmp_path)["changed"] > 0
    ca, host = _cert(creds / "ca.crt"), _cert(creds / "localhost" / "tls.crt")
    assert (creds / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (creds / "localhost" / "tls.key").stat().st_mode & 0o777 == 0o600
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # the host certificate is signed by the CA and names what was asked
    assert host.issuer == ca.subject
    host.verify_directly_issued_by(ca)
    sans = host.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "api1.example"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    }
    usage = host.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert isinstance(host.public_key(), ec.EllipticCurvePublicKey)
    days = (host.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    assert 360 <= days <= 365

    # a re-run changes nothing
    assert _run(tmp_path)["changed"] == 0
    assert _cert(creds / "localhost" / "tls.crt") == host

    # a certificate 20 days from expiry is renewed by the next run (same CA, a year again)
    (creds / "localhost" / "tls.crt").unlink()
    _run(tmp_path, nginx_tls_certificate_valid="+20d")
    short = _cert(creds / "localhost" / "tls.crt")
    assert (short.not_valid_after_utc - dt.datetime.now(dt.UTC)).days < 30
    assert _run(tmp_path)["changed"] > 0
    renewed = _cert(creds / "localhost" / "tls.crt")
    assert (renewed.not_valid_after_utc - dt.datetime.now(dt.UTC)).days >= 360
    renewed.verify_directly_issued_by(_cert(creds / "ca.crt"))
    assert _cert(creds / "ca.crt") == ca  # the CA itself was made once
