"""Hand-encoded Kafka requests, for checking error codes that client
libraries hide behind their retries."""
import socket
import struct

from kafka.record.default_records import DefaultRecordBatchBuilder


def _str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def batch(values):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(i, timestamp=None, key=None, value=v, headers=[])
    return bytes(b.build())


class Conn:
    def __init__(self, addr, timeout=30):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.corr = 0

    def send(self, api_key, version, body):
        self.corr += 1
        header = struct.pack(">hhi", api_key, version, self.corr) + _str("kraw")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)

    def recv(self):
        def exact(n):
            buf = b""
            while len(buf) < n:
                chunk = self.sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("broker closed the connection")
                buf += chunk
            return buf
        (n,) = struct.unpack(">i", exact(4))
        return exact(n)[4:]  # without the correlation id

    def close(self):
        self.sock.close()


def send_produce(conn, topic, partition, values, acks=-1, timeout_ms=30000):
    """Produce v3; read the answer with `produce_error`."""
    records = batch(values)
    body = (struct.pack(">h", -1) + struct.pack(">hi", acks, timeout_ms) + struct.pack(">i", 1) + _str(topic)
            + struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records)
    conn.send(0, 3, body)


def produce_error(conn):
    """Error code of the single partition of a Produce v3 response."""
    r = conn.recv()
    (ntopics,) = struct.unpack_from(">i", r, 0)
    assert ntopics == 1
    (tlen,) = struct.unpack_from(">h", r, 4)
    at = 6 + tlen
    (nparts, _partition, code) = struct.unpack_from(">iih", r, at)
    assert nparts == 1
    return code


def heartbeat_error(conn, group):
    """Heartbeat v0 for an unknown member: NOT_COORDINATOR (16) anywhere but
    at the coordinator, which answers UNKNOWN_MEMBER_ID (25)."""
    conn.send(12, 0, _str(group) + struct.pack(">i", 1) + _str("nobody"))
    (code,) = struct.unpack_from(">h", conn.recv(), 0)
    return code
