#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/corpus/<target>/ (binary files).

The seeds are the packets a MariaDB 10.11 server and the `mariadb` CLI
(Connector/C) exchange, with scrambles and auth data replaced by fixed bytes.
Run from anywhere: `python3 fuzz/make_corpus.py`. Output is deterministic.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

PROTOCOL_41 = 1 << 9
SSL = 1 << 11
SECURE_CONNECTION = 1 << 15
CONNECT_WITH_DB = 1 << 3
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
LENENC_DATA = 1 << 21
CLIENT_CAPS = 0x81BEAA05  # what Connector/C 3.3 sends (without SSL)


def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def lenenc(b):
    assert len(b) < 251
    return bytes([len(b)]) + b


def mariadb_greeting():
    p = b"\x0a" + b"5.5.5-10.11.19-MariaDB-0+deb12u1\0"
    p += struct.pack("<I", 42) + b"abcdefgh\0"
    p += bytes([0xFE, 0xFF, 0x2D, 0x02, 0x00, 0xFF, 0x81, 0x15])
    p += bytes(6) + bytes([0x1D, 0, 0, 0])
    p += b"ijklmnopqrst\0mysql_native_password\0"
    return p


def mysql8_greeting():
    p = b"\x0a" + b"8.0.36\0" + struct.pack("<I", 7) + b"ABCDEFGH\0"
    p += bytes([0xFF, 0xFF, 0xFF, 0x02, 0x00, 0xFF, 0xDF, 0x15]) + bytes(10)
    p += b"IJKLMNOPQRST\0caching_sha2_password\0"
    return p


def prefix(caps):
    return struct.pack("<II", caps, 0x01000000) + bytes([45]) + bytes(19) + bytes([0x1D, 0, 0, 0])


def ssl_request():
    return prefix(CLIENT_CAPS | SSL)


def handshake_response(caps=CLIENT_CAPS | SSL, user=b"app", db=b"shop", attrs=True):
    p = prefix(caps) + user + b"\0" + lenenc(b"\x5a" * 20)
    if db is not None:
        p += db + b"\0"
    p += b"mysql_native_password\0"
    if not attrs:
        return p
    attrs = b""
    for k, v in [
        (b"_client_name", b"libmariadb"),
        (b"_client_version", b"3.3.8"),
        (b"_os", b"Linux"),
        (b"_pid", b"123456"),
        (b"_platform", b"x86_64"),
        (b"_server_host", b"localhost"),
        (b"program_name", b"mariadb"),
    ]:
        attrs += lenenc(k) + lenenc(v)
    return p + lenenc(attrs)


def err(code, state, msg):
    return b"\xff" + struct.pack("<H", code) + b"#" + state + msg


OK = b"\x00\x00\x00\x02\x00\x00\x00"
AUTH_SWITCH = b"\xfemysql_native_password\0" + b"0123456789abcdefghij\0"
COM_QUERY = b"\x03select @@version"
COM_QUIT = b"\x01"
CLIENT_HELLO_START = bytes([0x16, 0x03, 0x01, 0x00, 0xF4, 0x01, 0x00, 0x00, 0xF0, 0x03, 0x03])


def phase(mode, backend, client):
    return bytes([mode]) + struct.pack("<H", len(backend)) + backend + client


def main():
    g = mariadb_greeting()
    hr = handshake_response()
    plain_hr = handshake_response(CLIENT_CAPS)
    seeds = {
        "greeting": {
            "mariadb-10.11": g,
            "mysql-8.0": mysql8_greeting(),
            "no-upper-caps": g[: 1 + 33 + 4 + 9 + 2],
        },
        "handshake_response": {
            "ssl-request": ssl_request(),
            "mariadb-cli": hr,
            "no-db-no-attrs": handshake_response(
                PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH, db=None, attrs=False
            ),
        },
        "packet_framing": {
            "greeting-packet": packet(0, g),
            "ssl-request-then-client-hello": packet(1, ssl_request()) + CLIENT_HELLO_START,
            "max-chunk-header": b"\xff\xff\xff\x00" + b"x" * 16,
            "partial": packet(1, hr)[:20],
        },
        "err_packet": {
            "access-denied": err(1045, b"28000", b"Access denied for user 'app'@'localhost' (using password: YES)"),
            "redirect": err(4196, b"HY000", b"|This database is being taken over; connect to db2:3307 instead|db2:3307"),
            "pre-4.1": b"\xff\x10\x04Too many connections",
            "host-blocked": err(1129, b"HY000", b"Host '10.0.0.7' is blocked because of many connection errors"),
        },
        "connection_phase": {
            # relay, plaintext listener, raw client: greeting, response, OK, a query
            "relay-plain": phase(0, packet(0, g) + packet(2, OK),
                                 packet(1, plain_hr) + packet(0, COM_QUERY) + packet(0, COM_QUIT)),
            "relay-plain-auth-switch": phase(0, packet(0, g) + packet(2, AUTH_SWITCH) + packet(4, OK),
                                             packet(1, plain_hr) + packet(3, b"\x11" * 20)),
            "relay-plain-backend-err": phase(0, packet(0, err(1040, b"08004", b"Too many connections")), b""),
            "relay-plain-backend-closes": phase(0, packet(0, g), packet(1, plain_hr)),
            "relay-plain-backend-stalls": phase(0x20, packet(0, g), packet(1, plain_hr)),
            "relay-plain-backend-stalls-mid-greeting": phase(0x20, packet(0, g)[:30], b""),
            "relay-plain-mysql8": phase(0, packet(0, mysql8_greeting()) + packet(2, OK), packet(1, plain_hr)),
            # TLS listener
            "tls-raw-no-ssl": phase(4, packet(0, g) + packet(2, OK), packet(1, plain_hr)),
            "tls-raw-sslrequest-garbage": phase(4, packet(0, g), packet(1, ssl_request()) + CLIENT_HELLO_START),
            "tls-raw-no-sslrequest": phase(4, packet(0, g), CLIENT_HELLO_START),
            "tls-client-cert": phase(4 | 8, packet(0, g) + packet(2, OK),
                                     packet(2, hr) + packet(0, COM_QUERY)),
            "tls-client-cert-auth-switch": phase(4 | 8, packet(0, g) + packet(2, AUTH_SWITCH) + packet(4, OK),
                                                 packet(2, hr) + packet(4, b"\x11" * 20)),
            "tls-client-no-cert": phase(4 | 16, packet(0, g) + packet(2, OK), packet(2, hr)),
            # failover redirect and unreachable backend
            "failover-plain": phase(1, b"", packet(1, plain_hr)),
            "failover-tls": phase(1 | 4 | 8, b"", packet(2, hr)),
            "gone-plain": phase(2, b"", packet(1, plain_hr)),
            "gone-tls": phase(2 | 4 | 8, b"", packet(2, hr)),
        },
    }
    for target, files in seeds.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
