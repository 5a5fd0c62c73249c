"""TLS and mutual TLS on a real nats-server, with certificates from the development CA."""

from __future__ import annotations

import ssl

import nats
import nats.errors
import pytest

from referral_hub.client import ClinicClient
from referral_hub.runtime.broker import credentials, permissions
from referral_hub.runtime.broker.server_config import TlsRequest
from referral_hub.runtime.jetstream.provision import provision

from .helpers import referral_request, secure_server

CLINIC = "harbor-pt"
CONNECTION_REFUSED = (nats.errors.Error, ssl.SSLError, OSError)


@pytest.fixture(params=[False, True], ids=["tls", "mutual-tls"])
def tls_server(request, tmp_path, monkeypatch):
    server = secure_server(tmp_path, monkeypatch, [CLINIC], tls=TlsRequest(mutual=request.param))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mutual_tls_server(tmp_path, monkeypatch):
    server = secure_server(tmp_path, monkeypatch, [CLINIC], tls=TlsRequest(mutual=True))
    server.start()
    yield server
    server.stop()


async def test_a_clinic_sends_over_tls_with_its_key(tls_server):
    server = tls_server
    admin = await nats.connect(server.url, **credentials.for_hub_user(permissions.ADMIN).connect_options())
    await provision(admin.jetstream())
    client = await ClinicClient.connect(server.url, CLINIC)
    receipt = await client.send(referral_request(CLINIC, "lotus-acu"))
    assert receipt.sequence == 1
    assert client.connection.connected_url is not None
    assert client.connection.connected_url.scheme == "tls"
    await client.close()
    await admin.close()


async def test_a_client_that_does_not_trust_the_hub_ca_is_refused(tls_server):
    server = tls_server
    with pytest.raises(CONNECTION_REFUSED):
        await nats.connect(
            server.url.replace("tls://", "nats://"),
            allow_reconnect=False,
            connect_timeout=2,
            **{**credentials.for_clinic(CLINIC).connect_options(), "tls": ssl.create_default_context()},
        )


async def test_mutual_tls_refuses_a_client_without_a_certificate(mutual_tls_server):
    presented = credentials.for_clinic(CLINIC)
    assert presented.cert_file is not None
    without_certificate = credentials.NatsCredentials(presented.inbox_prefix, presented.nkey_file, presented.ca_file)
    with pytest.raises(CONNECTION_REFUSED):
        await nats.connect(
            mutual_tls_server.url, allow_reconnect=False, connect_timeout=2, **without_certificate.connect_options()
        )
