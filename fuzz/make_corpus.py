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
CLIENT_CAPS = 0x81BEAA05  # what Connector/C 3.3 sends when it asks for TLS
PLAIN_CAPS = CLIENT_CAPS & ~SSL  # ... and when it does not


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


# COM_CHANGE_USER payloads captured from real clients against mariadbd 10.11.19, with the
# capabilities of the HandshakeResponse each sent (src/protocol/command.rs, CAPTURED, says how).
CHANGE_USER_CAPTURES = {
    "libmariadb-db-attrs": (0x00BEA28C, "117532001425d0631f5b24ab5d001303f72ec253a0e57f3e4273686f70002d006d7973716c5f6e61746976655f70617373776f72640080035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333933310f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d6507636170747572650c5f7365727665725f686f7374093132372e302e302e31"),
    "libmariadb-no-db": (0x00BEA284, "1175320014715a2776610cc57d097f9c8bef9da03b9e2cda01002d006d7973716c5f6e61746976655f70617373776f72640080035f6f73054c696e75780c5f636c69656e745f6e616d650a6c69626d617269616462045f70696404333933350f5f636c69656e745f76657273696f6e06332e332e3230095f706c6174666f726d067838365f36340c70726f6772616d5f6e616d6507636170747572650c5f7365727665725f686f7374093132372e302e302e31"),
    "mysql_async-db": (0x010FA288, "117532001461d58863eb18d4f32a1ff67461d14c664dd7566173686f70002d006d7973716c5f6e61746976655f70617373776f72640000"),
    "mysql_async-ed25519": (0x010FA288, "116564004087a49bda0476bde3c6ced73f858dcf14cdf78eb26ea6329aee65ba2e5ef00901d87794394d9e02e88c4bd15574b5db9a9125f47aa9d31374292140aa6af2b50f73686f70002d00636c69656e745f656432353531390000"),
}


def phase(mode, client, backend, crowd=0):
    """A connection_phase input: mode, crowd, the client's script, then the backend's."""
    return bytes([mode, crowd]) + struct.pack("<H", len(client)) + client + backend


# connection_phase mode bits (fuzz_targets/connection_phase.rs says what each means).
RELAY, FAILOVER, GONE, PROXY_USER = 0, 1, 2, 3
TLS = 4
CLIENT_CERT, CLIENT_NO_CERT = 8, 16
STALL = 0x20
LEARNED = 0x80
CROWD = 0x80


def change_user(user):
    """A COM_CHANGE_USER as libmariadb sends it (PLAIN_CAPS: lenenc attributes after the plugin)."""
    return (b"\x11" + user + b"\0" + b"\x14" + b"\x5a" * 20 + b"shop\0" + b"\x2d\x00"
            + b"mysql_native_password\0" + b"\x00")


def connection_phase_seeds():
    g = mariadb_greeting()
    hr = handshake_response()
    plain_hr = handshake_response(PLAIN_CAPS)
    answer = b"\x11" * 20
    result = packet(1, b"\x01") + packet(2, b"\x03def\0\0\0\x09@@version\0\x0c\x21\0\x00\x01\0\0\xfd\0\0\x27\0\0")
    # The backend: its greeting, the switch portcullis's renamed plugin asks for, the OK.
    switch_ok = packet(0, g) + packet(2, AUTH_SWITCH) + packet(4, OK)
    return {
        # Relay, plaintext listener, raw client: the own greeting (learned from this backend),
        # the response, the auth switch relayed, the answer, OK, a query and its result.
        "relay-plain-auth-switch": phase(RELAY | LEARNED,
                                         packet(1, plain_hr) + packet(3, answer) + packet(0, COM_QUERY)
                                         + packet(0, COM_QUIT), switch_ok + result),
        "relay-plain-fallback-greeting": phase(RELAY, packet(1, plain_hr) + packet(3, answer),
                                               switch_ok),
        "relay-plain-access-denied": phase(RELAY | LEARNED, packet(1, plain_hr) + packet(3, answer),
                                           packet(0, g) + packet(2, AUTH_SWITCH)
                                           + packet(4, err(1045, b"28000", b"Access denied for user 'app'"))),
        "relay-plain-backend-err": phase(RELAY, packet(1, plain_hr),
                                         packet(0, err(1040, b"08004", b"Too many connections"))),
        "relay-plain-backend-closes": phase(RELAY | LEARNED, packet(1, plain_hr), packet(0, g)),
        "relay-plain-backend-stalls": phase(RELAY | STALL | LEARNED, packet(1, plain_hr),
                                            packet(0, g) + packet(2, AUTH_SWITCH)),
        "relay-plain-backend-stalls-mid-greeting": phase(RELAY | STALL, packet(1, plain_hr), packet(0, g)[:30]),
        "relay-plain-mysql8": phase(RELAY | LEARNED, packet(1, plain_hr) + packet(3, answer),
                                    packet(0, mysql8_greeting()) + packet(2, AUTH_SWITCH) + packet(4, OK)),
        "relay-plain-no-plugin-auth": phase(RELAY, packet(1, handshake_response(PLAIN_CAPS & ~PLUGIN_AUTH, attrs=False)),
                                            switch_ok),
        "relay-plain-response-out-of-order": phase(RELAY, packet(3, plain_hr), switch_ok),
        # The OS user portcullis runs as (root on the fuzzing machines): refused at the door
        # behind a Unix-socket backend, unless allow_proxy_user; and at COM_CHANGE_USER.
        "relay-plain-os-user": phase(RELAY, packet(1, handshake_response(PLAIN_CAPS, user=b"root")), switch_ok),
        "proxy-user-plain-os-user": phase(PROXY_USER | LEARNED,
                                          packet(1, handshake_response(PLAIN_CAPS, user=b"root"))
                                          + packet(3, answer), switch_ok),
        "relay-plain-change-user-os-user": phase(RELAY | LEARNED,
                                                 packet(1, plain_hr) + packet(3, answer)
                                                 + packet(0, change_user(b"root")), switch_ok),
        # The waiting room: a second connection arrives before the response (this one is
        # closed to make room), or long after the door.
        "relay-plain-crowd-early": phase(RELAY, packet(1, plain_hr) + packet(3, answer), switch_ok, CROWD | 0),
        "relay-plain-crowd-late": phase(RELAY, packet(1, plain_hr) + packet(3, answer), switch_ok, CROWD | 0x7F),
        # TLS listener
        "tls-raw-no-ssl": phase(TLS, packet(1, plain_hr), switch_ok),
        "tls-raw-sslrequest-garbage": phase(TLS, packet(1, ssl_request()) + CLIENT_HELLO_START, switch_ok),
        "tls-raw-no-sslrequest": phase(TLS, CLIENT_HELLO_START, switch_ok),
        "tls-client-cert-auth-switch": phase(TLS | CLIENT_CERT | LEARNED,
                                             packet(2, hr) + packet(4, answer) + packet(0, COM_QUERY),
                                             switch_ok + result),
        "tls-client-cert-access-denied": phase(TLS | CLIENT_CERT | LEARNED, packet(2, hr) + packet(4, answer),
                                               packet(0, g) + packet(2, AUTH_SWITCH)
                                               + packet(4, err(1045, b"28000", b"Access denied for user 'app'"))),
        # The backend refuses after TLS: its ERR reaches the client inside TLS only.
        "tls-client-cert-backend-refuses": phase(TLS | CLIENT_CERT, packet(2, hr),
                                                 packet(0, err(1040, b"08004", b"Too many connections"))),
        "tls-client-cert-backend-stalls": phase(TLS | CLIENT_CERT | STALL | LEARNED, packet(2, hr),
                                                packet(0, g) + packet(2, AUTH_SWITCH)),
        # Out of order inside TLS (a fuzz finding): Bad handshake, no backend.
        "tls-client-cert-response-out-of-order": phase(TLS | CLIENT_CERT, packet(5, hr), switch_ok),
        "tls-client-cert-second-sslrequest": phase(TLS | CLIENT_CERT, packet(1, ssl_request()) + packet(2, hr),
                                                   switch_ok),
        "tls-client-cert-os-user": phase(TLS | CLIENT_CERT, packet(2, handshake_response(user=b"root")), switch_ok),
        "tls-client-no-cert": phase(TLS | CLIENT_NO_CERT, packet(2, hr), switch_ok),
        "tls-client-cert-crowd-early": phase(TLS | CLIENT_CERT, packet(2, hr), switch_ok, CROWD | 2),
        # Failover redirect (error form) and an unreachable backend
        "failover-plain": phase(FAILOVER, packet(1, plain_hr), b""),
        "failover-tls": phase(FAILOVER | TLS | CLIENT_CERT, packet(2, hr), b""),
        "gone-plain": phase(GONE, packet(1, plain_hr), b""),
        "gone-tls": phase(GONE | TLS | CLIENT_CERT, packet(2, hr), b""),
    }


def main():
    g = mariadb_greeting()
    hr = handshake_response()
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
        "connection_phase": connection_phase_seeds(),
    }
    cu = bytes.fromhex(CHANGE_USER_CAPTURES["libmariadb-db-attrs"][1])
    seeds["change_user"] = {
        name: struct.pack("<I", caps) + bytes.fromhex(payload)
        for name, (caps, payload) in CHANGE_USER_CAPTURES.items()
    }
    # The oldest layout: NUL-terminated auth data, nothing after the database.
    seeds["change_user"]["old-layout"] = struct.pack("<I", PROTOCOL_41) + b"\x11bob\0secret\0db\0"
    # Attributes right after the charset (CONNECT_ATTRS without PLUGIN_AUTH).
    seeds["change_user"]["attrs-without-plugin"] = (
        struct.pack("<I", PROTOCOL_41 | SECURE_CONNECTION | CONNECT_ATTRS)
        + b"\x11bob\0\x02xy\0\x21\x00\x04\x01a\x01b"
    )
    infile = packet(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t")
    for i in range(300):
        infile += packet((2 + i) & 0xFF, b"\x11,1\n")
    infile += packet((2 + 300) & 0xFF, b"") + packet(0, cu)
    # First two bytes choose the read sizes, the rest is the client's stream.
    seeds["command_framing"] = {
        "session": b"\x03\x11" + packet(0, COM_QUERY) + packet(0, cu) + packet(2, b"\x5a" * 20)
        + packet(0, b"\x0e"),
        "pipelined-change-users": b"\x00\x00" + packet(0, cu) + packet(0, COM_QUERY) + packet(0, cu),
        "local-infile-wrap": b"\x07\x3f" + infile,
        "max-chunk-then-continuation": b"\x01\x02" + b"\xff\xff\xff\x00\x03" + b"x" * 40,
    }
    # PROXY headers a load balancer sends (v2 built as portcullis builds it).
    v2 = b"\r\n\r\n\0\r\nQUIT\n"
    seeds["proxy_header"] = {
        "v1-tcp4": b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 3307\r\n" + packet(1, ssl_request()),
        "v1-tcp6": b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 3307\r\n",
        "v1-unknown": b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        "v2-tcp4": v2 + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 7, 198, 51, 100, 1])
        + struct.pack(">HH", 50000, 3307),
        "v2-tcp6-tlv": v2 + b"\x21\x21\x00\x27"
        + bytes.fromhex("20010db8000000000000000000000007" "20010db8000000000000000000000001")
        + struct.pack(">HH", 40000, 3307) + b"\x04\x00\x00",
        "v2-local": v2 + b"\x20\x00\x00\x00",
    }
    for target, files in seeds.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        # Seeds of an older layout would only mislead the fuzzer.
        for old in set(os.listdir(d)) - set(files):
            os.remove(os.path.join(d, old))
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
