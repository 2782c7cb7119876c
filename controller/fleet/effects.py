"""What the fleet core asks the service to do: publish messages. The core does no I/O."""
from collections import namedtuple

Publish = namedtuple("Publish", "topic payload qos retain")
