"""Certificates of the kubelet API: a CA, serving certificates and client certificates.

The layout follows kubeadm's (``/etc/kubernetes/pki``), under the stand-in's
``DIR/pki``:

``kubelet-ca.crt`` / ``kubelet-ca.key``
    The CA the agents trust for client certificates (their
    ``--kubelet-client-ca``, a kubelet's ``--client-ca-file``) and that signs
    their serving certificates (an API server's ``--kubelet-certificate-authority``).
``kubelet.crt`` / ``kubelet.key``
    The agents' serving certificate; SAN = the nodes' InternalIP.
``apiserver-kubelet-client.crt`` / ``apiserver-kubelet-client.key``
    What an API server presents to kubelets (``--kubelet-client-certificate`` /
    ``--kubelet-client-key``): CN ``kube-apiserver-kubelet-client``,
    O ``system:masters``, as kubeadm issues it.

A separate CA from the API server's ``DIR/pki/ca.crt``: the stand-in API server
keeps its CA key only in memory, so nothing else can sign with it. EC P-256 keys
keep generation to milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KubeletPki", "ensure_pki", "issue", "self_signed"]

CLIENT_CN = "kube-apiserver-kubelet-client"
DAYS = 365


@dataclass(frozen=True)
class KubeletPki:
    """Paths of the kubelet API's PEM files (see the module docstring)."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _write(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, crt: Path, kpath: Path) -> None:
    crt.parent.mkdir(parents=True, exist_ok=True)
    kpath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(kpath, 0o600)
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=DAYS))
    )


def _ca(cert: Path, key: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = _name("jupyter-flame-sim-kubelet-ca")
    ca = (
        _builder(name, name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(ca, ca_key, cert, key)


def issue(
    ca_cert: Path,
    ca_key: Path,
    cert: Path,
    key: Path,
    common_name: str,
    *,
    ips: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    organization: str | None = None,
) -> None:
    """Write a leaf certificate and key signed by the CA.

    Parameters
    ----------
    ca_cert, ca_key : Path
        The signing CA (PEM).
    cert, key : Path
        Where to write the certificate and its key (mode 0600).
    common_name : str
        Subject CN.
    ips, dns : tuple of str
        Subject alternative names; with any, the certificate is for serving
        (``serverAuth``), else for clients (``clientAuth``).
    organization : str, optional
        Subject O (a Kubernetes group of a client certificate).
    """
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    serving = bool(ips or dns)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if serving else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common_name, organization), issuer.subject, leaf_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if serving:
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.DNSName(d) for d in dns]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write(builder.sign(signer, hashes.SHA256()), leaf_key, cert, key)


def self_signed(cert: Path, key: Path, ip: str, hostname: str) -> None:
    """A self-signed serving certificate, as a kubelet makes without ``--tls-cert-file``."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"{hostname}@{int(dt.datetime.now().timestamp())}")
    signed = (
        _builder(name, name, leaf_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName(hostname)]
            ),
            critical=False,
        )
        .sign(leaf_key, hashes.SHA256())
    )
    _write(signed, leaf_key, cert, key)


def ensure_pki(directory: Path, ip: str, node_names: tuple[str, ...] = ()) -> KubeletPki:
    """Create (once) the kubelet CA, serving and client certificates in ``directory``.

    Parameters
    ----------
    directory : Path
        ``DIR/pki``; files already there are kept (the CA survives ``sim down``/``up``),
        except the serving certificate, reissued each time for ``ip`` and ``node_names``.
    ip : str
        The nodes' InternalIP, the serving certificate's IP SAN.
    node_names : tuple of str
        DNS SANs of the serving certificate.

    Returns
    -------
    KubeletPki
    """
    pki = KubeletPki(
        directory / "kubelet-ca.crt",
        directory / "kubelet-ca.key",
        directory / "kubelet.crt",
        directory / "kubelet.key",
        directory / "apiserver-kubelet-client.crt",
        directory / "apiserver-kubelet-client.key",
    )
    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        _ca(pki.ca_cert, pki.ca_key)
        pki.client_cert.unlink(missing_ok=True)
    issue(pki.ca_cert, pki.ca_key, pki.serving_cert, pki.serving_key,
          f"system:node:{node_names[0] if node_names else ip}", ips=(ip,), dns=node_names,
          organization="system:nodes")  # fmt: skip
    if not (pki.client_cert.exists() and pki.client_key.exists()):
        issue(pki.ca_cert, pki.ca_key, pki.client_cert, pki.client_key, CLIENT_CN,
              organization="system:masters")  # fmt: skip
    return pki
