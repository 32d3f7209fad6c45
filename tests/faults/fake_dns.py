"""A tiny DNS server on loopback that plays a Kubernetes headless Service.

    dns = FakeDns({"conversation.aichat.test": ["127.0.0.1"]})   # serves on 127.0.0.1:dns.port
    target = "dns://127.0.0.1:%d/conversation.aichat.test:50052" % dns.port
    dns.set("conversation.aichat.test", ["127.0.0.1", "127.0.0.2"])  # a replica became ready

gRPC's c-ares resolver asks the server named in the target's authority, so a channel
to `target` sees the replicas come and go as a pod would see a headless Service's A
records change. Answers A queries for the names it knows (TTL 0), an empty answer for
other types of a known name, NXDOMAIN for the rest; UDP and TCP, standard library only.
Every query is counted (queries()), so a test can see when clients looked again.
"""
import socket
import socketserver
import struct
import threading

QTYPE_A = 1


def _parse_question(msg):
    """(id, flags, qname labels bytes, qtype, qclass, end offset of the question)."""
    qid, flags, qdcount = struct.unpack("!HHH", msg[:6])
    if qdcount != 1:
        raise ValueError("one question expected")
    i = 12
    labels = []
    while msg[i] != 0:
        n = msg[i]
        labels.append(msg[i + 1:i + 1 + n].decode("ascii").lower())
        i += 1 + n
    i += 1
    qtype, qclass = struct.unpack("!HH", msg[i:i + 4])
    return qid, flags, ".".join(labels), qtype, qclass, i + 4


class FakeDns:
    def __init__(self, records):
        self._lock = threading.Lock()
        self._records = {k.lower(): list(v) for k, v in records.items()}
        self._queries = 0
        dns = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                reply = dns._answer(data)
                if reply:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self):
                head = self.rfile.read(2)
                if len(head) < 2:
                    return
                data = self.rfile.read(struct.unpack("!H", head)[0])
                reply = dns._answer(data)
                if reply:
                    self.wfile.write(struct.pack("!H", len(reply)) + reply)

        # UDP and TCP on the same port (c-ares falls back to TCP on truncation).
        for _ in range(50):
            self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
            self.port = self._udp.server_address[1]
            try:
                self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
                break
            except OSError:
                self._udp.server_close()
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        self._tcp.daemon_threads = self._udp.daemon_threads = True
        for s in (self._udp, self._tcp):
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def set(self, name, addresses):
        with self._lock:
            self._records[name.lower()] = list(addresses)

    def queries(self):
        with self._lock:
            return self._queries

    def close(self):
        for s in (self._udp, self._tcp):
            s.shutdown()
            s.server_close()

    def _answer(self, msg):
        try:
            qid, flags, name, qtype, qclass, end = _parse_question(msg)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            return None
        with self._lock:
            self._queries += 1
            addresses = self._records.get(name)
        answers = []
        if addresses is not None and qtype == QTYPE_A:
            for a in addresses:
                # Name as a pointer to the question (offset 12), type A, class IN, TTL 0.
                answers.append(struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, 0, 4) +
                               socket.inet_aton(a))
        rcode = 0 if addresses is not None else 3  # NXDOMAIN for names we do not know
        rflags = 0x8000 | (flags & 0x0100) | 0x0400 | rcode  # response, RD copied, authoritative
        header = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0)
        return header + msg[12:end] + b"".join(answers)
