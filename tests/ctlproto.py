"""The kfwd control protocol (include/kfwd/ctl.h) from Python, for tests/test_ctl.py and the
fuzz seeds: constants read from the header itself (so they cannot drift), message and
attribute builders, and a raw NETLINK_USERSOCK client that returns SCM_CREDENTIALS.
"""
import os
import re
import socket
import struct

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include", "kfwd", "ctl.h")
COUNTERS = os.path.join(os.path.dirname(HEADER), "counters.h")

NETLINK_USERSOCK = 2
SCM_CREDENTIALS = 2
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
F_REQUEST, F_MULTI, F_ACK, F_DUMP = 0x1, 0x2, 0x4, 0x300
F_CAPPED, F_ACK_TLVS = 0x100, 0x200
NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS = 1, 2
NLA_F_NESTED = 0x8000


def _load():
    text = open(HEADER).read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    names = {}
    for m in re.finditer(r"#define\s+KFWD_CTL_(\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b", text):
        names[m.group(1)] = int(m.group(2), 0)
    # enum kfwd_stats_attr is generated from the X-macro table of counters.h, in its order.
    ids = re.findall(r"\bX\((\w+),", re.sub(r"/\*.*?\*/", "", open(COUNTERS).read(), flags=re.S))
    text = re.sub(r"#define KFWD_STAT_ENUM.*?#undef KFWD_STAT_ENUM",
                  lambda m: ",".join("KFWD_STAT_" + i for i in ids) + ",", text, flags=re.S)
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\};", text, flags=re.S):
        value = -1
        for item in body.split(","):
            item = item.strip()
            if not item:
                continue
            m = re.match(r"(\w+)(?:\s*=\s*(0x[0-9a-fA-F]+|\d+))?$", item)
            if not m:
                raise ValueError(f"cannot read enum item {item!r} in {HEADER}")
            value = int(m.group(2), 0) if m.group(2) else value + 1
            names[m.group(1)[len("KFWD_"):] if m.group(1).startswith("KFWD_") else m.group(1)] = value
    return names


_NAMES = _load()
globals().update(_NAMES)
MSG_MAX = _NAMES["MSG_MAX"]


def _align(n):
    return (n + 3) & ~3


def attr(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * (_align(n) - n)


def u8(t, v):
    return attr(t, struct.pack("=B", v))


def u32(t, v):
    return attr(t, struct.pack("=I", v))


def u64(t, v):
    return attr(t, struct.pack("=Q", v))


def strz(t, s):
    return attr(t, s.encode() + b"\0")


def nest(t, payload):
    return attr(t | NLA_F_NESTED, payload)


def msg(t, flags, seq, payload, pid=0):
    return struct.pack("=IHHII", 16 + len(payload), t, flags, seq, pid) + payload


def error_msg(err, request, text=None, offset=None):
    tlv = b""
    if text is not None:
        tlv += strz(NLMSGERR_ATTR_MSG, text)
    if offset is not None:
        tlv += u32(NLMSGERR_ATTR_OFFS, offset)
    flags = F_CAPPED | (F_ACK_TLVS if tlv else 0)
    seq = struct.unpack_from("=I", request, 8)[0]
    return msg(NLMSG_ERROR, flags, seq, struct.pack("=i", err) + request[:16] + tlv)


def done_msg(seq, tlv=b""):
    return msg(NLMSG_DONE, F_MULTI, seq, struct.pack("=i", 0) + tlv)


def request(cmd, payload=b"", flags=F_REQUEST | F_ACK, seq=1):
    return msg(cmd, flags, seq, u32(A_VERSION, VERSION) + payload)  # noqa: F821


def parse_msgs(data):
    """[(type, flags, seq, pid, payload)] of one datagram."""
    out = []
    off = 0
    while off + 16 <= len(data):
        n, t, flags, seq, pid = struct.unpack_from("=IHHII", data, off)
        if n < 16 or off + n > len(data):
            raise ValueError(f"bad nlmsg length {n} at {off}")
        out.append((t, flags, seq, pid, data[off + 16:off + n]))
        off += _align(n)
    return out


def parse_attrs(payload):
    """[(type, value bytes)], nested flag stripped."""
    out = []
    off = 0
    while off + 4 <= len(payload):
        n, t = struct.unpack_from("=HH", payload, off)
        if n < 4 or off + n > len(payload):
            raise ValueError(f"bad attribute length {n} at {off}")
        out.append((t & 0x3FFF, payload[off + 4:off + n]))
        off += _align(n)
    return out


def error_of(payload, flags):
    """(errno, message or None) of an NLMSG_ERROR payload."""
    err = struct.unpack_from("=i", payload)[0]
    text = None
    if flags & F_ACK_TLVS:
        start = 20 if flags & F_CAPPED else 4 + _align(struct.unpack_from("=I", payload, 4)[0])
        for t, v in parse_attrs(payload[start:]):
            if t == NLMSGERR_ATTR_MSG:
                text = v.rstrip(b"\0").decode(errors="replace")
    return -err, text


class Client:
    """A NETLINK_USERSOCK socket with SO_PASSCRED, talking to one port id."""

    def __init__(self, portid):
        self.portid = portid
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        return self.sock.sendto(data, (self.portid, 0))

    def recv(self, timeout=5.0):
        """(data, (pid, uid, gid), sender port id), or None on timeout."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _flags, addr = self.sock.recvmsg(1 << 16, 64)
        except socket.timeout:
            return None
        cred = None
        for level, t, d in anc:
            if level == socket.SOL_SOCKET and t == SCM_CREDENTIALS:
                cred = struct.unpack("=iII", d[:12])
        return data, cred, addr[0]

    def drain(self):
        n = 0
        while self.recv(0.05) is not None:
            n += 1
        return n
