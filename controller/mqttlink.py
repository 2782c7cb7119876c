"""How the host side (controller, deployer, CLI) opens an MQTT link: a BrokerLink is a broker
address plus what it takes to be let in - the fleet CA to verify an mqtts:// broker against, and
the login of the principal speaking (controller, operator, or the user named in the URL).

Against a broker without a fleet (a plain mqtt:// test broker and no security folder) it
connects anonymously; against mqtts:// it refuses to start without the fleet CA rather than
trust whatever answers.
"""
import ssl

import paho.mqtt.client as mqtt

from .errors import BrokerError, SecurityError
from .security.material import FleetSecurity


class BrokerLink:
    def __init__(self, address, role, security=None):
        self.address = address
        self.role = role
        self.security = security or FleetSecurity()

    @property
    def host(self):
        return self.address.host

    @property
    def port(self):
        return self.address.port

    def principal(self):
        """The login to present, or None for an anonymous connection to an open broker."""
        if self.address.user:
            return self.security.principals.get(self.address.user)
        if not self.security.trusts():
            if self.address.tls:
                self.security.require_trust()
            return None
        return self.security.service(self.role)

    def tls_context(self):
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            ctx.load_verify_locations(cafile=self.security.require_trust().ca_cert)
        except (OSError, ssl.SSLError) as e:
            raise SecurityError("cannot load the fleet CA: %s" % e, self.security.ca_cert)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def client(self, client_id, clean_session=True, mqtt5=False):
        """A paho client with TLS and the login set; connecting is the caller's. mqtt5: speak MQTT
        5 (shared subscriptions for controller replicas); its session always starts clean."""
        if mqtt5:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if self.address.tls:
            client.tls_set_context(self.tls_context())
        principal = self.principal()
        if principal is not None:
            client.username_pw_set(principal.name, principal.password)
        return client

    def who(self):
        principal = self.principal()
        return principal.name if principal else "anonymous"

    def describe(self):
        return "%s as %s (%s)" % (self.address.url, self.who(),
                                  "TLS, broker verified against the fleet CA" if self.address.tls else "plaintext")


def connect_error(link, error):
    """A BrokerError saying why connecting to `link` failed, naming a TLS verification failure
    for what it is."""
    where = link.address.url
    if isinstance(error, ssl.SSLCertVerificationError):
        return BrokerError("the broker at %s failed TLS verification against the fleet CA: %s"
                           % (where, error.verify_message or error), link.host, link.port)
    if isinstance(error, ssl.SSLError):
        return BrokerError("TLS with the broker at %s failed: %s" % (where, error.reason or error), link.host, link.port)
    return BrokerError("cannot reach the broker at %s: %s" % (where, error), link.host, link.port)


def refusal_error(link, reason_code):
    return BrokerError("the broker at %s refused %s: %s" % (link.address.url, link.who(), reason_code),
                       link.host, link.port)
