"""Two "hosts" for the tests: two network namespaces joined by a veth pair (interface ``ls0`` in each), with
addresses that exist only inside them (10.99.22.1 and .2/30: no route leads out, so no packet leaves the pair),
host names of their own (a UTS namespace per command) and an /etc/hosts of their own (``ip netns exec`` binds
/etc/netns/NAME/hosts). :func:`start` makes them and ``stop`` removes namespaces, pair and files; where the
rights are missing, :class:`Unavailable` says why.

    hosts = two_hosts.start(); hosts.command(1, ["torchrun", ...]) -> argv running on host 2; hosts.stop()
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Sequence

NAMES = ("lsnode1", "lsnode2")
ADDRESSES = ("10.99.22.1", "10.99.22.2")
INTERFACE = "ls0"
NETNS_ETC = Path("/etc/netns")


class Unavailable(Exception):
    """Network namespaces cannot be made here (the reason)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


class TwoHosts:
    def __init__(self) -> None:
        tag = os.getpid()
        self.namespaces = (f"lsA{tag}", f"lsB{tag}")
        self.made: List[str] = []

    def start(self) -> None:
        veth = (f"lsva{os.getpid()}"[:15], f"lsvb{os.getpid()}"[:15])
        for ns in self.namespaces:
            _ip("netns", "add", ns)
            self.made.append(ns)
        _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in zip(ADDRESSES, NAMES))
        for ns, end, address in zip(self.namespaces, veth, ADDRESSES):
            _ip("link", "set", end, "netns", ns)
            _ip("-n", ns, "link", "set", end, "name", INTERFACE)
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", INTERFACE)
            _ip("-n", ns, "link", "set", INTERFACE, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / ns / "hosts").write_text(hosts)

    def command(self, host: int, argv: Sequence[str]) -> List[str]:
        """``argv`` run on host ``host`` (0 or 1): in its namespace, under its host name."""
        return ["ip", "netns", "exec", self.namespaces[host], "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', NAMES[host], *argv]

    def rsh_agent(self, folder: Path) -> Path:
        """A script for mpirun's ``plm_rsh_agent``: ``agent HOST COMMAND...`` runs COMMAND on HOST (instead of ssh)."""
        cases = "".join(f"  {n}) ns={ns};;\n" for n, ns in zip(NAMES, self.namespaces))
        path = folder / "netns-rsh"
        path.write_text(f'#!/bin/sh\nhost=$1; shift\ncase $host in\n{cases}  *) echo "no host $host" >&2; exit 1;;\n'
                        f'esac\nexec ip netns exec "$ns" unshare --uts sh -c "hostname $host && $*"\n')
        path.chmod(0o755)
        return path

    def stop(self) -> None:
        for ns in self.made:  # removing a namespace removes its end of the pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.made = []


def start() -> TwoHosts:
    """Two joined namespaces, or :class:`Unavailable` with the reason."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not installed (Debian: iproute2, util-linux)")
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root")
    hosts = TwoHosts()
    try:
        hosts.start()
        for host in (0, 1):  # a UTS namespace too
            done = subprocess.run(hosts.command(host, ["hostname"]), capture_output=True, text=True, timeout=30)
            if done.stdout.strip() != NAMES[host]:
                raise Unavailable(f"cannot name a host in a namespace: {done.stderr.strip()}")
    except (Unavailable, OSError, subprocess.TimeoutExpired) as exc:
        hosts.stop()
        raise Unavailable(str(exc)) from None
    return hosts
