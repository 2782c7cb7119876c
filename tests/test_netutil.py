import pytest

from edgefleet.controller.errors import ConfigError
from edgefleet.controller.netutil import parse_broker


@pytest.mark.parametrize("text,expected", [
    ("broker.lan", ("broker.lan", 1883)), ("10.0.0.2:1884", ("10.0.0.2", 1884)),
    ("[::1]:1883", ("::1", 1883)), ("mqtt://b.lan:8883", ("b.lan", 8883)),
])
def test_broker_addresses_parse(text, expected):
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text,why", [
    ("nohost:abc", "port must be a number"), ("h:99999", "port must be a number"), ("", "no broker given"),
    ("http://x:1", "expected HOST:PORT"), (":1883", "no host"),
])
def test_bad_broker_addresses_name_what_is_wrong(text, why):
    with pytest.raises(ConfigError, match=why):
        parse_broker(text)
