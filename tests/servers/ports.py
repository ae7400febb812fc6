"""Small network helpers shared by the test servers: free ports, readiness
polling and a throw-away self-signed TLS certificate."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import time
from dataclasses import dataclass

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that is free right now.

    The kernel picks it (bind to port 0), so it is a high ephemeral port. There
    is an unavoidable race between closing our socket and the server binding
    it; with ports picked from the ephemeral range that is rare enough.
    """
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Return ``count`` distinct free ports.

    All sockets stay open until every port is picked, otherwise the kernel
    may hand out the same port twice.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def wait_for_port(host: str, port: int, deadline: float, alive=lambda: True) -> None:
    """Poll-connect until ``host:port`` accepts, or raise TimeoutError.

    ``deadline`` is a time.monotonic() value. ``alive`` is called between
    attempts so a server that died during start-up fails fast instead of
    running out the clock.
    """
    delay = 0.005
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if not alive():
            raise RuntimeError(f"server exited before {host}:{port} accepted connections")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def set_parent_death_signal(sig: int = 15) -> None:
    """preexec_fn for Popen: the kernel sends ``sig`` to the child when the
    test process dies, even by SIGKILL, where atexit handlers never run."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


@dataclass(frozen=True)
class SelfSignedCert:
    cert_path: str  # PEM certificate; also usable as a client cafile
    key_path: str  # PEM private key (unencrypted)

    @property
    def cafile(self) -> str:
        return self.cert_path


def make_self_signed_cert(directory: str, name: str = "server") -> SelfSignedCert:
    """Write a self-signed cert + key for localhost/127.0.0.1 into ``directory``.

    An EC P-256 key keeps generation in the millisecond range (RSA 2048 costs
    ~100 ms per call). The cert is its own CA (CA:TRUE + keyCertSign) so a
    client can pass it as ``cafile`` and verify hostname ``127.0.0.1`` or
    ``localhost`` with a default ssl context.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=True,
                content_commitment=False, data_encipherment=False, key_agreement=True,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, f"{name}.crt")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    # The key is written 0600 first so it is never world-readable, even briefly.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return SelfSignedCert(cert_path, key_path)
