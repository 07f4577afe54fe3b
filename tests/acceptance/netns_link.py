"""TEST FACILITY: a bad network link in the router's position, for tests/acceptance/test_netns.py.

Run inside a network namespace (``ip netns exec NS python netns_link.py ...``):

    netns_link.py nocsum IFACE...
        software checksums on these interfaces (frames relayed from user space
        carry what the wire carries: no checksum left for the hardware to fill)
    netns_link.py relay DELAY LOSS IF_A IF_B [IF_A IF_B ...]
        copy Ethernet frames both ways between each pair of interfaces; from
        SIGUSR1 on, each frame is delayed DELAY seconds and dropped with
        probability LOSS (what ``tc netem delay 100ms loss 5%`` does, which this
        kernel lacks). Frames, not connections: TCP runs end to end, sees real
        loss and retransmits, and the coordinator sees the workers' own
        addresses (a TCP proxy would show it its own).
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import random
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def tx_checksum_off(ifname: str) -> None:
    """``ethtool -K IFACE tx off`` (not installed here) through its ioctl."""
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


async def relay(delay: float, loss: float, pairs: list[tuple[str, str]]) -> None:
    loop = asyncio.get_running_loop()
    impaired = False

    def impair() -> None:
        nonlocal impaired
        impaired = True

    loop.add_signal_handler(signal.SIGUSR1, impair)
    rng = random.Random(11)

    def open_raw(ifname: str) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
        s.setblocking(False)
        return s

    def pump(src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                frame, addr = src.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:  # the link was set down (a host cut off): nothing more comes from it
                loop.remove_reader(src)
                return
            if addr[2] == PACKET_OUTGOING:  # what this relay itself sent out on src
                continue
            if not impaired:
                _send(dst, frame)
            elif rng.random() >= loss:
                loop.call_later(delay, _send, dst, frame)

    for a, b in pairs:
        sa, sb = open_raw(a), open_raw(b)
        loop.add_reader(sa, pump, sa, sb)
        loop.add_reader(sb, pump, sb, sa)
    print("ready", flush=True)
    await asyncio.Event().wait()


def _send(dst: socket.socket, frame: bytes) -> None:
    try:
        dst.send(frame)
    except OSError:  # the link is down (a host cut off): the frame is lost, as on a wire
        pass


def main(argv: list[str]) -> None:
    if argv[0] == "nocsum":
        for ifname in argv[1:]:
            tx_checksum_off(ifname)
    elif argv[0] == "relay":
        names = argv[3:]
        asyncio.run(relay(float(argv[1]), float(argv[2]), list(zip(names[::2], names[1::2]))))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
