"""An operator kit: what another machine needs to operate the fleet over its broker, in one
file made on the fleet host (`edgefleet operator-kit`) and taken in on the operator's machine
(`edgefleet join`):

  the broker's URL, the fleet CA certificate (to verify the broker), the operator login, and
  the bundle public key (sign.pub, for `deploy` to check bundles).

No CA key, no node or controller logins, no private signing key: an operator's machine can
watch and steer the fleet and roll out bundles signed elsewhere, never issue certificates,
pose as a node or the controller, or sign a bundle. The kit holds a password: it is written
0600, and should travel as a secret does.
"""
import json
import os

from ..errors import ConfigError
from ..netutil import BrokerAddress
from . import files
from .material import FleetSecurity
from .principals import OPERATOR, OPERATOR_USER, Principal

FORMAT = "edgefleet-operator-kit/1"


def make(broker, security=None, public_key_hex=None):
    """The kit for `broker` (a BrokerAddress) from this fleet host's material, as a dict."""
    security = (security or FleetSecurity()).require()
    operator = security.service(OPERATOR)
    return {"format": FORMAT, "broker": broker.url, "ca_pem": security.ca_pem().decode(),
            "operator": {"name": operator.name, "password": operator.password},
            "sign_pub": public_key_hex}


def write(path, kit):
    files.write_private(path, json.dumps(kit, indent=1) + "\n")
    return path


def read(path):
    """A kit file, checked field by field: ConfigError naming what is wrong."""
    try:
        with open(path) as f:
            kit = json.load(f)
    except OSError as e:
        raise ConfigError("cannot read operator kit %s: %s" % (path, e.strerror)) from None
    except ValueError as e:
        raise ConfigError("%s is not an operator kit (not JSON: %s)" % (path, e)) from None
    if not isinstance(kit, dict) or kit.get("format") != FORMAT:
        raise ConfigError("%s is not an operator kit (format %s)" % (path, FORMAT))
    operator = kit.get("operator")
    if not (isinstance(operator, dict) and isinstance(operator.get("name"), str)
            and isinstance(operator.get("password"), str) and operator["password"]):
        raise ConfigError("%s: the operator login is missing or malformed" % path)
    if operator["name"] != OPERATOR_USER:
        raise ConfigError("%s: the login is %r, not the operator's (%s)" % (path, operator["name"], OPERATOR_USER))
    ca = kit.get("ca_pem")
    if not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca:
        raise ConfigError("%s: the fleet CA certificate is missing" % path)
    if kit.get("sign_pub") is not None and not isinstance(kit["sign_pub"], str):
        raise ConfigError("%s: sign_pub must be the public key in hex" % path)
    if not isinstance(kit.get("broker"), str):
        raise ConfigError("%s: the broker URL is missing" % path)
    kit["broker_address"] = BrokerAddress.parse(kit["broker"])
    return kit


def join(kit, home, config_path):
    """Install `kit` (read()) on this machine: `home`/security with the CA certificate and the
    operator login only, `home`/sign.pub, and the broker in the config file. Returns the paths
    written. Refuses a fleet host's home: its CA key and logins must stay as they are."""
    return install(kit, home) + [_set_broker(config_path, kit["broker"])]


def install(kit, home):
    """The kit's security folder and sign.pub under `home` (join() without the config file)."""
    from ..install import keys
    security = FleetSecurity(os.path.join(home, "security"))
    if os.path.exists(security.ca_key):
        raise ConfigError("%s holds a fleet's CA key: this is a fleet host, not an operator's machine "
                          "(set EDGEFLEET_HOME to another folder to join from here)" % security.dir)
    files.private_dir(security.dir)
    written = [files.write_private(security.ca_cert, kit["ca_pem"])]
    security.principals.replace([Principal(kit["operator"]["name"], OPERATOR, kit["operator"]["password"])])
    written.append(security.principals.path)
    if kit.get("sign_pub"):
        keys.parse(kit["sign_pub"], "the kit's sign_pub")
        written.append(files.write_private(os.path.join(home, keys.BOARD_FILE), kit["sign_pub"].strip() + "\n"))
    return written


def _set_broker(config_path, url):
    """Set `broker` in the user's config file, keeping what else it says."""
    import tomllib

    import tomli_w
    data = {}
    if os.path.exists(config_path):
        try:
            with open(config_path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError("cannot read %s to set the broker in it: %s" % (config_path, e)) from None
    data["broker"] = url
    os.makedirs(os.path.dirname(os.path.abspath(config_path)), exist_ok=True)
    with open(config_path, "w") as f:
        f.write(tomli_w.dumps(data))
    return config_path
