"""The PROXY protocol parser (v1 and v2): the specification's rules, and fuzzing with hypothesis."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from qptwisted.service.proxyheader import (
    V1_MAX,
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    parse,
    signature,
    v1_header,
    v2_header,
)

IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
PORT = st.integers(0, 65535)
ENDPOINTS = st.one_of(st.tuples(st.tuples(IPV4, PORT), st.tuples(IPV4, PORT)),
                      st.tuples(st.tuples(IPV6, PORT), st.tuples(IPV6, PORT)))


def feed(data: bytes, cuts: list[int]) -> ProxyHeader | None:
    """Parse as a server would: after each piece arrives, with everything received so far."""
    received = b""
    points = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    start = 0
    for point in points:
        received += data[start:point]
        start = point
        header = parse(received)
        if header is not None:
            return header
    return None


class V1Tests(unittest.TestCase):
    def test_tcp4(self) -> None:
        header = parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\nEHLO x\r\n")
        self.assertEqual(header, ProxyHeader(1, 44, ("192.0.2.1", 56324), ("198.51.100.7", 25)))

    def test_tcp6(self) -> None:
        header = parse(b"PROXY TCP6 2001:db8::1 2001:db8::25 1 25\r\n")
        assert header is not None
        self.assertEqual((header.source, header.destination), (("2001:db8::1", 1), ("2001:db8::25", 25)))

    def test_ipv4_mapped_becomes_ipv4(self) -> None:
        header = parse(b"PROXY TCP6 ::ffff:192.0.2.9 ::1 1000 25\r\n")
        assert header is not None
        self.assertEqual(header.source, ("192.0.2.9", 1000))

    def test_unknown_is_local(self) -> None:
        header = parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
        assert header is not None
        self.assertTrue(header.local)
        self.assertEqual(header.length, len(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"))

    def test_incomplete_waits(self) -> None:
        self.assertIsNone(parse(b"PROXY TCP4 192.0.2.1 198.51.100.7 56"))
        self.assertIsNone(parse(b"PRO"))
        self.assertIsNone(parse(b""))

    def test_refusals(self) -> None:
        for bad, why in [
            (b"EHLO client.example\r\n", "no PROXY header"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\n", "without CRLF"),
            (b"PROXY TCP4 192.0.2.1  198.51.100.7 1 25\r\n", "malformed"),
            (b"PROXY TCP5 192.0.2.1 198.51.100.7 1 25\r\n", "malformed"),
            (b"PROXY TCP4 2001:db8::1 198.51.100.7 1 25\r\n", "not an IPv4"),
            (b"PROXY TCP6 192.0.2.1 2001:db8::1 1 25\r\n", "not an IPv6"),
            (b"PROXY TCP4 192.0.2.01 198.51.100.7 1 25\r\n", "not an IPv4"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 65536 25\r\n", "not a port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 025 25\r\n", "not a port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 -1 25\r\n", "not a port"),
            (b"PROXY TCP4 192.0.2.1 198.51.100.7 \xd9\xa1 25\r\n", "not ASCII"),
            (b"PROXY TCP4 192.0.2.1\r198.51.100.7 1 25\r\n", "stray line ending"),
            (b"PROXY " + b"x" * V1_MAX, "longer than 107"),
        ]:
            with self.assertRaises(ProxyHeaderError, msg=bad) as caught:
                parse(bad)
            self.assertIn(why, str(caught.exception))

    def test_longest_legal_header(self) -> None:
        longest = v1_header(("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535))
        self.assertEqual(len(longest), 104)
        self.assertIsNotNone(parse(longest))


class V2Tests(unittest.TestCase):
    def test_tcp4_with_tlvs_skipped(self) -> None:
        tlvs = b"\x04\x00\x05nlb-1" + b"\x20\x00\x01\x00"  # NETNS and SSL-ish TLVs: ignored
        data = v2_header(("192.0.2.1", 40000), ("198.51.100.7", 25), tlvs) + b"EHLO"
        header = parse(data)
        assert header is not None
        self.assertEqual((header.version, header.source, header.destination),
                         (2, ("192.0.2.1", 40000), ("198.51.100.7", 25)))
        self.assertEqual(data[header.length:], b"EHLO")

    def test_tcp6(self) -> None:
        header = parse(v2_header(("2001:db8::1", 1), ("2001:db8::2", 25)))
        assert header is not None
        self.assertEqual(header.source, ("2001:db8::1", 1))

    def test_local_health_check(self) -> None:
        header = parse(v2_header(None, None))
        assert header is not None
        self.assertTrue(header.local)

    def test_unspec_and_unix_families_are_local(self) -> None:
        for family, size in ((0x00, 0), (0x31, 216)):
            header = parse(V2_SIGNATURE + struct.pack("!BBH", 0x21, family, size) + b"\0" * size)
            assert header is not None
            self.assertTrue(header.local)

    def test_incomplete_waits(self) -> None:
        data = v2_header(("192.0.2.1", 40000), ("198.51.100.7", 25))
        for cut in range(len(data)):
            self.assertIsNone(parse(data[:cut]))

    def test_refusals(self) -> None:
        fixed = V2_SIGNATURE
        for bad, why in [
            (fixed + struct.pack("!BBH", 0x11, 0x11, 12) + b"\0" * 12, "version 1"),
            (fixed + struct.pack("!BBH", 0x22, 0x11, 12) + b"\0" * 12, "unknown command"),
            (fixed + struct.pack("!BBH", 0x21, 0x12, 12) + b"\0" * 12, "datagram"),
            (fixed + struct.pack("!BBH", 0x21, 0x41, 12) + b"\0" * 12, "unknown address family"),
            (fixed + struct.pack("!BBH", 0x21, 0x11, 8) + b"\0" * 8, "12 needed"),
            (fixed + struct.pack("!BBH", 0x21, 0x21, 12) + b"\0" * 12, "36 needed"),
            (fixed + struct.pack("!BBH", 0x21, 0x11, V2_MAX_PAYLOAD + 1), "at most 4096"),
            (b"\r\n\r\n\x00\r\nQUIX\n", "no PROXY header"),
        ]:
            with self.assertRaises(ProxyHeaderError, msg=bad) as caught:
                parse(bad)
            self.assertIn(why, str(caught.exception))

    def test_too_long_refused_before_it_arrives(self) -> None:
        head = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 60000)
        self.assertRaises(ProxyHeaderError, parse, head)


class SignatureTests(unittest.TestCase):
    def test_undecided_until_enough_bytes(self) -> None:
        self.assertIsNone(signature(b"PROX"))
        self.assertIsNone(signature(b"\r\n\r\n"))
        self.assertTrue(signature(b"PROXY "))
        self.assertTrue(signature(V2_SIGNATURE))
        self.assertFalse(signature(b"EHLO"))
        self.assertFalse(signature(b"\r\nQUIT"))


class FuzzTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes_parse_or_refuse_cleanly(self, data: bytes) -> None:
        try:
            header = parse(data)
        except ProxyHeaderError:
            return
        if header is not None:
            self.assertLessEqual(header.length, len(data))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=120))
    def test_v2_signature_then_anything(self, tail: bytes) -> None:
        try:
            header = parse(V2_SIGNATURE + tail)
        except ProxyHeaderError:
            return
        if header is not None:
            self.assertEqual(header.version, 2)
            self.assertLessEqual(header.length, 16 + len(tail))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=120))
    def test_v1_prefix_then_anything(self, tail: bytes) -> None:
        try:
            header = parse(b"PROXY " + tail)
        except ProxyHeaderError:
            return
        if header is not None:
            self.assertLessEqual(header.length, V1_MAX)

    @settings(max_examples=200, deadline=None)
    @given(ENDPOINTS, st.booleans(), st.binary(max_size=64), st.lists(st.integers(0, 200), max_size=6),
           st.binary(max_size=40))
    def test_round_trip_in_any_pieces(self, endpoints: tuple[tuple[str, int], tuple[str, int]], v2: bool,
                                      tlvs: bytes, cuts: list[int], rest: bytes) -> None:
        source, destination = endpoints
        header_bytes = v2_header(source, destination, tlvs) if v2 else v1_header(source, destination)
        header = feed(header_bytes + rest, cuts)
        assert header is not None
        self.assertEqual((header.source, header.destination, header.length),
                         (source, destination, len(header_bytes)))

    @settings(max_examples=200, deadline=None)
    @given(ENDPOINTS, st.integers(0, 200))
    def test_one_flipped_byte_never_crashes(self, endpoints: tuple[tuple[str, int], tuple[str, int]],
                                           position: int) -> None:
        for data in (v1_header(*endpoints), v2_header(*endpoints)):
            broken = bytearray(data)
            broken[position % len(broken)] ^= 0xFF
            try:
                parse(bytes(broken))
            except ProxyHeaderError:
                pass
