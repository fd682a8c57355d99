"""What the daemon can see of its sandbox's network: the interfaces that are up, besides loopback.

Reported by /health so a backend that takes the sandbox off its network from outside (the kubernetes pod's
network container) can confirm it from inside before it hands the sandbox out. Read from sysfs, which any
user may read: no capability or socket is needed.
"""

from __future__ import annotations

import os

IFF_UP = 0x1
SYS_NET = "/sys/class/net"


def interfaces_up(root: str = SYS_NET) -> list[str] | None:
    """Names of the interfaces other than `lo` whose IFF_UP flag is set; None when sysfs cannot tell."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    up = []
    for name in names:
        if name == "lo":
            continue
        try:
            with open(os.path.join(root, name, "flags"), encoding="ascii") as flags:
                if int(flags.read().strip(), 16) & IFF_UP:
                    up.append(name)
        except (OSError, ValueError):
            return None
    return up
