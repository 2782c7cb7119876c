"""The fleet's certificate authority and the broker certificate it signs.

ECDSA P-256 throughout: the smallest keys and signatures mbedTLS verifies on a microcontroller,
and a handshake an MCU finishes in a fraction of the time RSA-2048 would take. Nodes do not get
certificates: they authenticate with a password over the TLS link (principals.py), which keeps
a board's secret to a few bytes and lets the broker revoke one node without a CRL.
"""
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import SecurityError

CA_YEARS = 10
SERVER_YEARS = 3


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name):
    """A new self-signed CA: (key PEM, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # Boards without a real-time clock start in 2000 or 1970; a CA valid from an hour
            # ago still verifies on any board whose clock was set once.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _key_pem(key), _cert_pem(cert)


def _load_ca(ca_key_pem, ca_cert_pem):
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as e:
        raise SecurityError("the fleet CA's key or certificate is not readable PEM: %s" % e)
    return key, cert


def _san(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server(ca_key_pem, ca_cert_pem, names):
    """A broker certificate for `names` (host names and IP addresses nodes use to reach it),
    signed by the fleet CA: (key PEM, certificate PEM)."""
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise SecurityError("a broker certificate needs at least one host name or address")
    ca_key, ca_cert = _load_ca(ca_key_pem, ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365 * SERVER_YEARS))
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _key_pem(key), _cert_pem(cert)


def server_names(cert_pem):
    """The host names and addresses a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName) + san.get_values_for_type(x509.IPAddress)]


def to_der(cert_pem):
    """DER bytes of a PEM certificate: what MicroPython's tls module loads, and 40% smaller."""
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def fingerprint(cert_pem):
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return "SHA256:" + digest.hex()
