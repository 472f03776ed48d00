"""Free TCP ports on 127.0.0.1 for the processes the demo, the tests and the benches start."""

from __future__ import annotations

import random
import socket

# Below Linux's ephemeral range (32768-60999 by default): a port the OS hands to bind(0) or to an
# outgoing connection can be taken by a Kafka client's socket between the probe and the bind, which
# happened to the demo's metrics port while other tests ran beside it.
_LOW, _HIGH = 20_000, 32_768


def free_port(adjacent: int = 1) -> int:
    """A port P such that P .. P + adjacent - 1 are all free on 127.0.0.1 right now."""
    for _ in range(200):
        port = random.randrange(_LOW, _HIGH - adjacent)
        try:
            for candidate in range(port, port + adjacent):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise OSError(f"no {adjacent} adjacent free TCP ports on 127.0.0.1 in {_LOW}-{_HIGH}")
