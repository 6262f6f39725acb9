"""A network partition of the suite's own: one server in a network namespace, joined to this one by a
veth pair, so that every packet between it and the system's processes can be dropped and let through
again. ``cut()`` takes the server's end of the link down: its peer keeps its address and route, so
what the processes send is dropped silently (nothing refused, connect and read hang, as when a
switch or a security group drops traffic); ``heal()`` brings it up again. Neither iptables nor nft is
needed (neither is installed here), and no other traffic of the machine is touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Partition:
    """``host`` is the server's address; start the server with ``prefix`` before its command."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("the partition scenario makes a network namespace of its own (ip netns): run it as root")
        tag = secrets.token_hex(3)
        self.namespace = f"aperture-chaos-{tag}"
        self.outside, self.inside = f"apo{tag}", f"api{tag}"  # interface names: 15 characters at most
        a, b = 200 + secrets.randbelow(50), secrets.randbelow(256)
        self.host = f"10.{a}.{b}.2"
        _ip("netns", "add", self.namespace)
        try:
            _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            _ip("link", "set", self.inside, "netns", self.namespace)
            _ip("addr", "add", f"10.{a}.{b}.1/30", "dev", self.outside)
            _ip("link", "set", self.outside, "up")
            self._inside("addr", "add", f"{self.host}/30", "dev", self.inside)
            self._inside("link", "set", "lo", "up")
            self._inside("link", "set", self.inside, "up")
            # The server's hardware address pinned on this side: with the link cut, ARP would fail in a few
            # seconds and a connect would get "No route to host" at once; pinned, every packet is sent and
            # dropped, and a connect hangs until its own timeout, as behind a switch that drops traffic.
            shown = subprocess.run(
                ["ip", "-n", self.namespace, "-o", "link", "show", self.inside], capture_output=True, text=True
            ).stdout.split()
            mac = shown[shown.index("link/ether") + 1]
            _ip("neigh", "replace", self.host, "lladdr", mac, "dev", self.outside, "nud", "permanent")
        except BaseException:
            self.close()
            raise

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]

    def _inside(self, *args: str) -> None:
        _ip("-n", self.namespace, *args)

    def cut(self) -> None:
        self._inside("link", "set", self.inside, "down")

    def heal(self) -> None:
        self._inside("link", "set", self.inside, "up")

    def close(self) -> None:
        """Every process left in the namespace (an epmd a RabbitMQ node started there) killed, then the
        link and the namespace removed."""
        pids = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, check=False)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)
