"""DICOM over TLS: the node with a certificate, a pynetdicom SCU that verifies it."""

from __future__ import annotations

import ssl
import subprocess

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_node.errors import SettingsError
from dicom_node.settings import TlsSettings
from tests.conftest import require_tool


@pytest.fixture
def certificate(tmp_path):
    openssl = require_tool("openssl")
    key, cert = tmp_path / "node.key", tmp_path / "node.crt"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_echo_over_tls(make_node, certificate):
    cert, key = certificate
    node = make_node(tls=TlsSettings(enabled=True, cert_file=cert, key_file=key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="RADDRAFT", tls_args=(client, "127.0.0.1"))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    # A client that speaks plain DICOM to the TLS port gets nowhere.
    plain = AE(ae_title="PLAIN")
    plain.add_requested_context(Verification)
    plain.acse_timeout = 5
    assert not plain.associate("127.0.0.1", node.port, ae_title="RADDRAFT").is_established


def test_tls_without_certificate_is_a_settings_error():
    with pytest.raises(SettingsError, match="cert_file"):
        TlsSettings(enabled=True)
