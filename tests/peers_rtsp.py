"""RTSP test peers for kfwd's pytest suite (no kfwd needed to run them).

GstRtspServer   gst-rtsp-server (python3-gi) in a subprocess on 127.0.0.1: mounts /ts (H.264 +
                AAC in MPEG-TS over RTP, rtpmp2tpay) and /h264 (rtph264pay); rate="8M" makes /ts
                ~8 Mbit/s (incompressible video), timeout=N sets each session's timeout.
ScriptedRtspServer
                a deterministic RTSP/1.0 server (threads, standard library): logs every request
                it receives, answers OPTIONS/DESCRIBE/SETUP/PLAY/PAUSE/GET_PARAMETER/
                SET_PARAMETER/TEARDOWN, can demand Basic or Digest auth, redirect with 3xx, serve
                big SDPs with absolute controls, refuse non-TCP transports with 461, and after
                PLAY (or on demand) send '$' frames, server requests (ANNOUNCE, GET_PARAMETER,
                REDIRECT) and raw bytes split at chosen byte boundaries.
RtspConn        a raw RTSP client connection that reads messages and '$' frames itself.

Run as a script, `peers_rtsp.py gst PORT [--rate 8M] [--timeout N]` is the gst-rtsp-server
process GstRtspServer starts; it prints "READY" once it listens.
"""

import argparse
import base64
import hashlib
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from peers import LOCAL, SocketClient, parse_head

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
CRLF = b"\r\n"
DEFAULT_REALM = "kfwd-test"
DEFAULT_NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"
RECV_SIZE = 65536
START_TIMEOUT = 20.0


# --------------------------------------------------------------------------- wire helpers


def frame(channel, payload):
    """One interleaved frame: '$', channel, 16-bit big-endian length, payload."""
    if len(payload) > 0xFFFF:
        raise ValueError("an interleaved frame carries at most 65535 bytes")
    return struct.pack(">cBH", b"$", channel, len(payload)) + bytes(payload)


def message(start_line, headers=(), body=b""):
    """An RTSP message; Content-Length is added when there is a body."""
    lines = [start_line.encode() if isinstance(start_line, str) else start_line]
    for k, v in headers:
        lines.append(f"{k}: {v}".encode())
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return CRLF.join(lines) + CRLF + CRLF + bytes(body)


RTPMAPS = {"h264": (96, "H264/90000"), "ts": (33, "MP2T/90000")}


def sdp(control_base, tracks=1, absolute=True, pad_to=0, media="h264", controls=None):
    """An SDP whose media controls are absolute URLs under control_base (or relative); padded
    with a=x-pad lines up to pad_to bytes to make big SDPs. media: "h264" or "ts" (MPEG-TS,
    static payload type 33). controls: the a=control values of the tracks as they are (None
    for an absent line), instead of the generated ones."""
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=kfwd scripted", "t=0 0",
             f"a=control:{control_base.rstrip('/') + '/' if absolute else '*'}"]
    pt0, encoding = RTPMAPS[media]
    for i in range(tracks):
        ctl = f"{control_base.rstrip('/')}/trackID={i}" if absolute else f"trackID={i}"
        if controls is not None:
            ctl = controls[i]
        lines += [f"m=video 0 RTP/AVP {pt0 + i}", f"a=rtpmap:{pt0 + i} {encoding}"]
        if ctl is not None:
            lines.append(f"a=control:{ctl}")
    text = "\r\n".join(lines) + "\r\n"
    n = 0
    while len(text) < pad_to:
        text += f"a=x-pad:{n:08d} " + "x" * 64 + "\r\n"
        n += 1
    return text.encode()


class Message:
    """A parsed RTSP message (request or response) with its raw head."""

    def __init__(self, raw_head, body):
        self.raw = raw_head + body
        lines = raw_head.decode("latin-1").split("\r\n")
        self.start_line = lines[0]
        self.headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                self.headers.append((k.strip(), v.strip()))
        self.body = body
        parts = self.start_line.split(" ", 2)
        self.is_response = self.start_line.startswith("RTSP/")
        if self.is_response:
            self.status = int(parts[1])
            self.method = self.url = None
        else:
            self.method, self.url = parts[0], parts[1] if len(parts) > 1 else ""
            self.status = None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def headers_named(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def cseq(self):
        return self.header("CSeq")

    def __repr__(self):
        return f"<Message {self.start_line!r} {len(self.body)} B body>"


class Reader:
    """Splits the bytes of one direction into Messages and ('$', channel, payload) frames."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise EOFError("peer closed")
        self.buf += data

    def _need(self, n):
        while len(self.buf) < n:
            self._fill()

    def next(self):
        """A Message, or a tuple ('$', channel, payload)."""
        self._need(1)
        if self.buf[:1] == b"$":
            self._need(4)
            _, ch, n = struct.unpack(">cBH", self.buf[:4])
            self._need(4 + n)
            payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
            return ("$", ch, payload)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end]
        m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
        n = int(m.group(1)) if m else 0
        self._need(end + n)
        body, self.buf = self.buf[end:end + n], self.buf[end + n:]
        return Message(head, body)


def digest_response(user, password, realm, nonce, method, uri, qop=None, nc=None, cnonce=None,
                    algorithm="MD5"):
    """RFC 2617 request-digest."""
    def md5(s):
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = md5(f"{user}:{realm}:{password}")
    if algorithm.lower() == "md5-sess":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = md5(f"{method}:{uri}")
    if qop:
        return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5(f"{ha1}:{nonce}:{ha2}")


def parse_auth_params(value):
    """'Digest a="b", c=d' -> ('digest', {'a': 'b', 'c': 'd'})."""
    scheme, _, rest = value.strip().partition(" ")
    params = dict((k.lower(), v1 if v1 else v2)
                  for k, v1, v2 in re.findall(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', rest))
    return scheme.lower(), params


def rtp(seq, payload, *, pt=33, csrcs=0, ext=None, pad=0, marker=False):
    """An RTP packet (RFC 3550): csrcs CSRC entries, an extension of ext bytes (a multiple of
    4), pad padding bytes (the last one their count)."""
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | csrcs
    out = struct.pack(">BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, seq * 3000, 0x1234)
    out += b"".join(struct.pack(">I", 0x1000 + i) for i in range(csrcs))
    if ext is not None:
        out += struct.pack(">HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += b"\0" * (pad - 1) + bytes([pad])
    return out


def ts_packets(n, seed=0):
    """n MPEG-TS packets (188 bytes, sync byte 0x47) of pseudo-random content."""
    out = bytearray()
    for i in range(n):
        body = hashlib.sha256(b"%d-%d" % (seed, i)).digest() * 6
        out += b"\x47" + body[:187]
    return bytes(out)


class HttpStream(SocketClient):
    """A raw HTTP/1.x client for the gateway: sends a GET or HEAD, parses the answer head and
    reads the endless body on demand."""

    def __init__(self, port, target, *, method="GET", version="1.1", timeout=10.0, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((LOCAL, port))
        host = "" if version == "1.0" else f"Host: {LOCAL}:{port}\r\n"
        self.sock.sendall(f"{method} {target} HTTP/{version}\r\n{host}\r\n".encode())
        self.buf = b""
        self.status = None
        self.headers = {}

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise EOFError(f"closed before the head: {self.buf!r}")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, headers = parse_head(head)
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v for k, v in headers.items}
        return self.status

    def read(self, n):
        """Exactly n body bytes (EOFError when the body ends first)."""
        while len(self.buf) < n:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise EOFError(f"body ended after {len(self.buf)} of {n} bytes")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, limit=1 << 24):
        while len(self.buf) < limit:
            data = self.sock.recv(RECV_SIZE)
            if not data:
                break
            self.buf += data
        out, self.buf = self.buf, b""
        return out


# --------------------------------------------------------------------------- client


class RtspConn(SocketClient):
    """A raw RTSP client connection: send requests, read responses, frames and server requests."""

    def __init__(self, port, host=LOCAL, timeout=10.0, rcvbuf=None):
        """rcvbuf: SO_RCVBUF, set before the connect. Shrinking a receive buffer on a connected
        socket shrinks its window below the MSS the sender chose from the larger one: the sender
        then moves only a window per zero-window probe (about 150 KB/s on loopback, 6.18)."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(self.sock)
        self.cseq = 0

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, url, headers=(), body=b""):
        """Send a request with the next CSeq; returns that CSeq."""
        self.cseq += 1
        self.send(message(f"{method} {url} RTSP/1.0", [("CSeq", self.cseq), *headers], body))
        return self.cseq

    def next(self):
        return self.reader.next()

    def response(self, cseq=None, frames=None, server_requests=None):
        """The next response (with CSeq cseq when given); frames and server requests met on the
        way are appended to the given lists."""
        while True:
            item = self.next()
            if isinstance(item, tuple):
                if frames is not None:
                    frames.append(item)
                continue
            if not item.is_response:
                if server_requests is not None:
                    server_requests.append(item)
                continue
            if cseq is None or item.cseq == str(cseq):
                return item

    def call(self, method, url, headers=(), body=b"", **kw):
        return self.response(self.request(method, url, headers, body), **kw)



# --------------------------------------------------------------------------- scripted server


class ScriptedRtspServer:
    """A deterministic RTSP/1.0 server on 127.0.0.1 for exact checks.

    requests     every request received, in order, as Message objects (with .conn, the index of
                 the connection it came on)
    responses    the answers clients gave to server requests
    client_frames  the '$' frames clients sent, as ('$', channel, payload)
    Options:
      tracks, absolute, sdp_pad   the SDP: tracks with absolute (or relative) controls, padded
                                  to sdp_pad bytes
      media, controls             the SDP's encoding ("h264" or "ts") and explicit a=control
                                  values (see sdp())
      content_base                the DESCRIBE answer's Content-Base: None for the request URL
                                  + "/", "" for none
      auth                        None, "basic" or "digest" (user/password/realm; qop="auth"
                                  unless qop=None, algorithm "MD5" or "MD5-sess")
      redirects                   {path: (status, location)}: that answer for requests on path
      session_timeout             adds ";timeout=N" to Session
      tcp_only                    SETUP without a TCP transport gets 461
      script                      sent after the PLAY answer: a list of items, each bytes (raw)
                                  or ("$", channel, payload) or ("request", method, url,
                                  headers, body)
      chunks                      byte counts the script's bytes are cut into (cycled), each
                                  piece sent alone with TCP_NODELAY and `gap` seconds between
      handler                     handler(server, conn_index, Message) -> bytes or None: an
                                  answer that replaces the built-in one
    """

    def __init__(self, *, tracks=1, absolute=True, sdp_pad=0, auth=None, user="user",
                 password="pass", realm=DEFAULT_REALM, qop="auth", algorithm="MD5", redirects=None,
                 session_timeout=None, tcp_only=True, script=(), chunks=None, gap=0.002,
                 handler=None, session_id="12345678", media="h264", controls=None,
                 content_base=None):
        self.tracks, self.absolute, self.sdp_pad = tracks, absolute, sdp_pad
        self.media, self.controls, self.content_base = media, controls, content_base
        self.auth, self.user, self.password, self.realm = auth, user, password, realm
        self.qop, self.algorithm = qop, algorithm
        self.redirects = redirects or {}
        self.session_timeout, self.tcp_only = session_timeout, tcp_only
        self.script, self.chunks, self.gap = list(script), chunks, gap
        self.handler, self.session_id = handler, session_id
        self.requests, self.responses, self.conns, self.client_frames = [], [], [], []
        self.lock = threading.Lock()
        self.stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((LOCAL, 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.server_cseq = 1000
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def url(self, path="/stream"):
        return f"rtsp://{LOCAL}:{self.port}{path}"

    # ---- sending

    def serialize(self, items):
        out = b""
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                out += item
            elif item[0] == "$":
                out += frame(item[1], item[2])
            elif item[0] == "request":
                _, method, url, headers, body = item
                with self.lock:
                    self.server_cseq += 1
                    cseq = self.server_cseq
                out += message(f"{method} {url} RTSP/1.0", [("CSeq", cseq), *headers], body)
            else:
                raise ValueError(f"unknown script item {item!r}")
        return out

    def send(self, conn_index, data, chunks=None):
        """Send raw bytes on a connection, cut into pieces of the given sizes (cycled)."""
        sock = self.conns[conn_index]
        chunks = chunks or self.chunks
        if not chunks:
            sock.sendall(data)
            return
        pos, i = 0, 0
        while pos < len(data):
            n = chunks[i % len(chunks)]
            sock.sendall(data[pos:pos + n])
            pos += n
            i += 1
            if self.gap:
                time.sleep(self.gap)

    def send_script(self, conn_index, items, chunks=None):
        self.send(conn_index, self.serialize(items), chunks)

    def send_request(self, conn_index, method, url, headers=(), body=b""):
        self.send_script(conn_index, [("request", method, url, list(headers), body)], chunks=[1 << 30])

    # ---- serving

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(sock)
                index = len(self.conns) - 1
            threading.Thread(target=self._serve, args=(index, sock), daemon=True).start()

    def _serve(self, index, sock):
        reader = Reader(sock)
        try:
            while not self.stopping:
                item = reader.next()
                if isinstance(item, tuple):
                    with self.lock:
                        self.client_frames.append(item)  # RTCP or RECORD media from the client
                    continue
                if item.is_response:
                    with self.lock:
                        self.responses.append(item)
                    continue
                item.conn = index
                with self.lock:
                    self.requests.append(item)
                answer = self.handler(self, index, item) if self.handler else None
                if answer is None:
                    answer, after = self._answer(item)
                else:
                    after = False
                sock.sendall(answer)
                if after and self.script:
                    self.send_script(index, self.script)
        except (EOFError, OSError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _reply(self, req, status, reason, headers=(), body=b""):
        return message(f"RTSP/1.0 {status} {reason}", [("CSeq", req.cseq or "0"), *headers], body)

    def _authorized(self, req):
        value = req.header("Authorization")
        if not value:
            return False
        scheme, params = parse_auth_params(value)
        if self.auth == "basic":
            want = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return scheme == "basic" and value.split(None, 1)[1].strip() == want
        if scheme != "digest" or params.get("username") != self.user or params.get("uri") != req.url:
            return False
        want = digest_response(self.user, self.password, self.realm, DEFAULT_NONCE, req.method, req.url,
                               params.get("qop"), params.get("nc"), params.get("cnonce"), self.algorithm)
        return params.get("response") == want and params.get("nonce") == DEFAULT_NONCE

    def _challenge(self):
        if self.auth == "basic":
            return [("WWW-Authenticate", f'Basic realm="{self.realm}"')]
        qop = f', qop="{self.qop}"' if self.qop else ""
        return [("WWW-Authenticate", f'Digest realm="{self.realm}", nonce="{DEFAULT_NONCE}"'
                 f'{qop}, algorithm={self.algorithm}, opaque="5ccc069c403ebaf9f0171e9517f40e41"')]

    def _session(self):
        return self.session_id + (f";timeout={self.session_timeout}" if self.session_timeout else "")

    def _answer(self, req):
        """(answer bytes, whether the script follows)."""
        path = re.sub(r"^rtsp://[^/]*", "", req.url) if req.url != "*" else "*"
        for prefix, (status, location) in self.redirects.items():
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return self._reply(req, status, "Redirect", [("Location", location)]), False
        if self.auth and req.method != "OPTIONS" and not self._authorized(req):
            return self._reply(req, 401, "Unauthorized", self._challenge()), False
        m = req.method
        if m == "OPTIONS":
            return self._reply(req, 200, "OK", [("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, "
                                                 "TEARDOWN, GET_PARAMETER, SET_PARAMETER")]), False
        if m == "DESCRIBE":
            base = req.url.rstrip("/") + "/" if self.content_base is None else self.content_base
            body = sdp(base or req.url, self.tracks, self.absolute, self.sdp_pad, self.media, self.controls)
            headers = [("Content-Base", base)] if base else []
            return self._reply(req, 200, "OK", headers + [("Content-Type", "application/sdp")], body), False
        if m == "SETUP":
            transports = [t.strip() for t in (req.header("Transport") or "").split(",") if t.strip()]
            tcp = [t for t in transports if t.split(";")[0].upper().endswith("/TCP")]
            if self.tcp_only and not tcp:
                return self._reply(req, 461, "Unsupported Transport"), False
            return self._reply(req, 200, "OK", [("Session", self._session()),
                                                ("Transport", tcp[0] if tcp else transports[0])]), False
        if m == "PLAY":
            return self._reply(req, 200, "OK", [("Session", self._session()),
                                                ("RTP-Info", f"url={req.url.rstrip('/')}/trackID=0;seq=1;rtptime=0")]), True
        if m in ("PAUSE", "GET_PARAMETER", "SET_PARAMETER", "TEARDOWN", "RECORD", "ANNOUNCE"):
            return self._reply(req, 200, "OK", [("Session", self._session())]), False
        return self._reply(req, 501, "Not Implemented"), False

    def stop(self):
        self.stopping = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() that close() would not
        except OSError:
            pass
        self.lsock.close()
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


# --------------------------------------------------------------------------- kfwd helpers

KFWDCTL = os.path.join(os.path.dirname(HERE), "build", "kfwdctl")


def kfwd_rtsp_config(port, ctl_file, routes, extra=""):
    """A kfwd configuration with an RTSP listener on 127.0.0.1:port; routes: the route/upstream
    lines."""
    return f"listen {LOCAL}:{port} rtsp\nctl-socket-file {ctl_file}\n{routes}\n{extra}\n"


def conns(ctl_file):
    """`kfwdctl -j conn list` of the kfwd publishing ctl_file: its RTSP connections."""
    import json
    out = subprocess.run([KFWDCTL, "-f", str(ctl_file), "-j", "conn", "list"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    return [c for c in json.loads(out) if c.get("protocol") == "rtsp"]


def conn_details(ctl_file):
    """The `details` of every RTSP connection of conns()."""
    return [c.get("details", {}) for c in conns(ctl_file)]


# --------------------------------------------------------------------------- gst-rtsp-server


class GstRtspServer:
    """gst-rtsp-server in a subprocess (this file run as `gst`), stopped by its PID."""

    def __init__(self, port, *, rate=None, timeout=None, shared=True):
        args = [PYTHON, os.path.abspath(__file__), "gst", str(port)]
        if rate:
            args += ["--rate", rate]
        if timeout:
            args += ["--timeout", str(timeout)]
        if not shared:
            args += ["--not-shared"]
        self.port = port
        # stderr to a file: a pipe nobody reads would block gst once 64 KiB of warnings piled up.
        self.errfile = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.errfile, text=True)
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            err = self.stop()
            raise RuntimeError(f"gst-rtsp-server did not start: {err}")

    def url(self, mount):
        return f"rtsp://{LOCAL}:{self.port}{mount}"

    def stop(self):
        """Terminate the process; returns its stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.errfile.closed:
            return ""
        self.errfile.seek(0)
        err = self.errfile.read()
        self.errfile.close()
        return err

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


# Video: light (ball, 320x240, 1 Mbit/s) or ~8 Mbit/s (snow is incompressible: openh264 at
# 352x288 and 8 Mbit/s produces ~8.2 Mbit/s of TS measured here). x264 is not in Debian's gst.
VIDEO = {
    None: "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=25/1 "
          "! openh264enc bitrate=1000000 rate-control=bitrate complexity=low gop-size=25",
    "8M": "videotestsrc is-live=true pattern=snow ! video/x-raw,width=352,height=288,framerate=25/1 "
          "! openh264enc bitrate=8000000 rate-control=bitrate complexity=low gop-size=25",
}
AUDIO = "audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=48000,channels=2 ! voaacenc ! aacparse"


def gst_main(argv):
    ap = argparse.ArgumentParser(prog="peers_rtsp.py gst")
    ap.add_argument("port", type=int)
    ap.add_argument("--rate", choices=["8M"], default=None)
    ap.add_argument("--timeout", type=int, default=None, help="session timeout in seconds")
    ap.add_argument("--not-shared", action="store_true")
    a = ap.parse_args(argv)

    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer as G

    Gst.init(None)
    server = G.RTSPServer()
    server.set_address(LOCAL)
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    launches = {
        "/ts": f"( {VIDEO[a.rate]} ! h264parse ! mpegtsmux name=mux ! rtpmp2tpay name=pay0 pt=33 "
               f"{AUDIO} ! mux. )",
        "/h264": f"( {VIDEO[None]} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )",
    }
    for mount, launch in launches.items():
        factory = G.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(not a.not_shared)
        mounts.add_factory(mount, factory)
    if a.timeout:
        def on_client(_server, client):
            client.connect("new-session", lambda _c, session: session.set_timeout(a.timeout))
        server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print("attach failed", file=sys.stderr, flush=True)
        return 1
    print("READY", flush=True)
    GLib.MainLoop().run()
    return 0


FRAME_PAYLOAD = 1328


def payload(i):
    """Frame i's payload: its number repeated, FRAME_PAYLOAD bytes."""
    return i.to_bytes(4, "big") * (FRAME_PAYLOAD // 4)


class MediaServer(ScriptedRtspServer):
    """The scripted server, whose PLAY starts a thread sending `frames` numbered frames, so its
    connection thread goes on reading (and logging) the client's requests meanwhile. TEARDOWN
    stops the media before it is answered."""

    def __init__(self, frames, **kw):
        self.frames, self.sent = frames, 0
        self.stop_media, self.media = threading.Event(), None
        super().__init__(handler=self._handle, **kw)

    def _handle(self, server, index, msg):
        if msg.method == "PLAY":
            sock = self.conns[index]
            sock.sendall(message("RTSP/1.0 200 OK", [("CSeq", msg.cseq), ("Session", "12345678")]))
            self.media = threading.Thread(target=self._send, args=(sock,), daemon=True)
            self.media.start()
            return b""
        if msg.method == "TEARDOWN" and self.media:
            self.stop_media.set()
            self.media.join(10)
            return None
        if msg.method == "GET_PARAMETER":
            return b""  # logged; an answer would race the media thread on the socket
        return None

    def _send(self, sock):
        try:
            for i in range(self.frames):
                if self.stop_media.is_set():
                    return
                sock.sendall(frame(0, payload(i)))
                self.sent = i + 1
        except OSError:
            pass


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "gst":
        sys.exit(gst_main(sys.argv[2:]))
    print(__doc__)
    sys.exit(2)
