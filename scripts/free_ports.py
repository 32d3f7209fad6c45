#!/usr/bin/env python3
"""Free TCP ports on 127.0.0.1 for servers that the scripts start (and restart) later.

    free_ports.py N [RUN]   prints N distinct free ports, then, when RUN is given, the
                            first of RUN consecutive free ports (the metrics ports)

A port that bind(0) hands out comes from the kernel's ephemeral range, and once it is
released the kernel may give it to any outgoing connection; a server that starts on it a
moment later (or restarts on it after a kill) then fails with "address in use". So the
ports are drawn at random from below the ephemeral range, which the kernel never hands
to a client socket, and each one is checked by binding it.
"""
import random
import socket
import sys

LOW = 10000


def ephemeral_start():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class Picker:
    def __init__(self):
        self.high = ephemeral_start()
        self.held = []
        self.taken = set()

    def _bind(self, port):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            return False
        self.held.append(s)
        self.taken.add(port)
        return True

    def _candidates(self, run):
        if self.high - run <= LOW:  # no room below the ephemeral range: take what bind(0) gives
            for _ in range(200):
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
                s.close()
                yield port
            return
        for _ in range(2000):
            yield random.randrange(LOW, self.high - run + 1)

    def take(self, run=1):
        """The first of `run` consecutive free ports, all of them held until close()."""
        for base in self._candidates(run):
            ports = range(base, base + run)
            if any(p in self.taken or p > 65535 for p in ports):
                continue
            got = []
            for p in ports:
                if not self._bind(p):
                    break
                got.append(p)
            if len(got) == run:
                return base
            for p in got:  # a partial run: give its ports back
                self.taken.discard(p)
        raise RuntimeError("no %d free consecutive port(s) on 127.0.0.1" % run)

    def close(self):
        for s in self.held:
            s.close()
        self.held = []


def free_ports(n, run=0):
    picker = Picker()
    try:
        ports = [picker.take() for _ in range(n)]
        if run:
            ports.append(picker.take(run))
        return ports
    finally:
        picker.close()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(*free_ports(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) == 3 else 0))
