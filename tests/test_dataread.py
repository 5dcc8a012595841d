"""DataReader: DATA framing, unstuffing, limits (RFC 5321 4.1.1.4, 4.5.2, 4.5.3.1.6)."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted.smtp.receiver import HARD_LINE_LIMIT, DataReader


class Base(unittest.SynchronousTestCase):
    def reader(self, databytes: int = 0, max_line: int = 1000) -> DataReader:
        self.pieces: list[bytes] = []
        return DataReader(self.pieces.append, databytes, max_line)

    def stored(self) -> bytes:
        return b"".join(self.pieces)

    def feed_all(self, reader: DataReader, *chunks: bytes) -> bytes | None:
        rest: bytes | None = None
        for index, chunk in enumerate(chunks):
            rest = reader.feed(chunk)
            if rest is not None:
                self.assertEqual(index, len(chunks) - 1, "terminator seen too early")
        return rest


class FramingTests(Base):
    def test_rfc5321_4_1_1_4_crlf_dot_crlf_ends_the_message(self) -> None:
        reader = self.reader()
        self.assertEqual(reader.feed(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), b"QUIT\r\n")
        self.assertEqual(self.stored(), b"Subject: x\n\nbody\n")
        self.assertEqual(reader.size, len(b"Subject: x\n\nbody\n"))
        self.assertFalse(reader.bare_newline or reader.long_line or reader.too_big)

    def test_rest_is_empty_bytes_not_none(self) -> None:
        self.assertEqual(self.reader().feed(b"a\r\n.\r\n"), b"")

    def test_empty_message(self) -> None:
        reader = self.reader()
        self.assertEqual(reader.feed(b".\r\nNOOP\r\n"), b"NOOP\r\n")
        self.assertEqual(self.stored(), b"")
        self.assertEqual(reader.size, 0)

    def test_no_terminator_yet(self) -> None:
        reader = self.reader()
        self.assertIsNone(reader.feed(b"line\r\n"))
        self.assertIsNone(reader.feed(b"partial"))
        self.assertEqual(self.stored(), b"line\n")
        self.assertEqual(reader.feed(b" line\r\n.\r\n"), b"")
        self.assertEqual(self.stored(), b"line\npartial line\n")

    def test_dot_inside_a_line_is_not_a_terminator(self) -> None:
        reader = self.reader()
        self.assertIsNone(reader.feed(b"a.\r\n x . \r\nx.\r\n"))
        self.assertEqual(reader.feed(b".\r\n"), b"")
        self.assertEqual(self.stored(), b"a.\n x . \nx.\n")

    def test_terminator_split_at_every_position(self) -> None:
        stream = b"Subject: s\r\n\r\nbody\r\n..stuffed\r\n.\r\nNEXT"
        for cut in range(1, len(stream) - len(b"NEXT")):
            reader = self.reader()
            rest = self.feed_all(reader, stream[:cut], stream[cut:])
            self.assertEqual(rest, b"NEXT", f"cut at {cut}")
            self.assertEqual(self.stored(), b"Subject: s\n\nbody\n.stuffed\n", f"cut at {cut}")

    def test_terminator_split_in_three(self) -> None:
        stream = b"x\r\n.\r\n"
        for first in range(1, len(stream) - 1):
            for second in range(first + 1, len(stream)):
                reader = self.reader()
                rest = self.feed_all(reader, stream[:first], stream[first:second], stream[second:])
                self.assertEqual(rest, b"", f"cuts {first}, {second}")
                self.assertEqual(self.stored(), b"x\n")

    def test_one_byte_at_a_time(self) -> None:
        stream = b"A: b\r\n\r\n..\r\n...x\r\nend\r\n.\r\n"
        reader = self.reader()
        rest = self.feed_all(reader, *[stream[i:i + 1] for i in range(len(stream))])
        self.assertEqual(rest, b"")
        self.assertEqual(self.stored(), b"A: b\n\n.\n..x\nend\n")
        self.assertFalse(reader.bare_newline)


class UnstuffingTests(Base):
    def test_rfc5321_4_5_2_leading_dot_removed(self) -> None:
        reader = self.reader()
        reader.feed(b"..x\r\n...\r\nx..\r\n.. y\r\n.\r\n")
        self.assertEqual(self.stored(), b".x\n..\nx..\n. y\n")

    def test_rfc5321_4_5_2_single_leading_dot_deleted(self) -> None:
        # A client that does not stuff sends ".x": the server deletes the dot all the same.
        reader = self.reader()
        reader.feed(b".x\r\nmid\r\n.y z\r\n.\r\n")
        self.assertEqual(self.stored(), b"x\nmid\ny z\n")

    def test_dot_line_only(self) -> None:
        reader = self.reader()
        self.assertEqual(reader.feed(b"..\r\n.\r\n"), b"")
        self.assertEqual(self.stored(), b".\n")

    def test_unstuffing_at_chunk_start(self) -> None:
        reader = self.reader()
        reader.feed(b"first\r\n")
        reader.feed(b"..second\r\n")
        reader.feed(b"..third\r\n.\r\n")
        self.assertEqual(self.stored(), b"first\n.second\n.third\n")

    def test_size_counts_after_unstuffing(self) -> None:
        reader = self.reader()
        reader.feed(b"..ab\r\n.\r\n")
        self.assertEqual(reader.size, len(b".ab\n"))


class SmugglingTests(Base):
    """CVE-2023-51764/51765/51766: bare CR or LF never frames the end of DATA."""

    def assert_not_terminated(self, terminator: bytes) -> None:
        reader = self.reader()
        stream = b"Subject: s\r\n\r\nbody" + terminator + b"MAIL FROM:<evil@x.test>\r\n"
        self.assertIsNone(reader.feed(stream), f"{terminator!r} ended the message")
        self.assertEqual(reader.feed(b".\r\n"), b"")
        self.assertTrue(reader.bare_newline, f"{terminator!r} not flagged")

    def test_cve_2023_51764_lf_dot_lf(self) -> None:
        self.assert_not_terminated(b"\n.\n")

    def test_cve_2023_51764_lf_dot_crlf(self) -> None:
        self.assert_not_terminated(b"\n.\r\n")

    def test_cve_2023_51765_cr_dot_cr(self) -> None:
        self.assert_not_terminated(b"\r.\r")

    def test_cve_2023_51766_crlf_dot_lf(self) -> None:
        self.assert_not_terminated(b"\r\n.\n")

    def test_crlf_dot_cr(self) -> None:
        self.assert_not_terminated(b"\r\n.\r")

    def test_cr_dot_crlf(self) -> None:
        self.assert_not_terminated(b"\r.\r\n")

    def test_bare_lf_split_across_chunks(self) -> None:
        reader = self.reader()
        reader.feed(b"a\r\nb")
        reader.feed(b"\nc\r\n")
        reader.feed(b".\r\n")
        self.assertTrue(reader.bare_newline)

    def test_cr_before_crlf_is_bare(self) -> None:
        reader = self.reader()
        reader.feed(b"a\r\r\n.\r\n")
        self.assertTrue(reader.bare_newline)

    def test_bare_newline_in_first_line(self) -> None:
        reader = self.reader()
        self.assertEqual(reader.feed(b"\n.\r\n.\r\n"), b"")
        self.assertTrue(reader.bare_newline)


class LimitTests(Base):
    def test_rfc5321_4_5_3_1_6_line_of_1000_octets_accepted(self) -> None:
        reader = self.reader()
        reader.feed(b"a" * 998 + b"\r\n.\r\n")
        self.assertFalse(reader.long_line)
        self.assertEqual(self.stored(), b"a" * 998 + b"\n")

    def test_rfc5321_4_5_3_1_6_line_of_1001_octets_flagged(self) -> None:
        reader = self.reader()
        self.assertEqual(reader.feed(b"short\r\n" + b"a" * 999 + b"\r\n.\r\n"), b"")
        self.assertTrue(reader.long_line)

    def test_long_line_in_pieces_flagged_and_memory_bounded(self) -> None:
        reader = self.reader(max_line=100)
        for _ in range(1000):
            self.assertIsNone(reader.feed(b"x" * 37))
            self.assertLessEqual(len(reader._partial), 100 + 37)
        self.assertTrue(reader.long_line)
        self.assertEqual(reader.feed(b"\r\nnext line\r\n.\r\nREST"), b"REST")

    def test_long_line_ending_right_before_terminator(self) -> None:
        reader = self.reader(max_line=10)
        reader.feed(b"y" * 50)
        self.assertEqual(reader.feed(b"\r\n.\r\nREST"), b"REST")
        self.assertTrue(reader.long_line)

    def test_long_line_followed_by_cr_split(self) -> None:
        reader = self.reader(max_line=10)
        reader.feed(b"y" * 50 + b"\r")
        self.assertEqual(reader.feed(b"\n.\r\n"), b"")
        self.assertTrue(reader.long_line)
        self.assertFalse(reader.bare_newline)

    def test_no_line_limit_uses_hard_limit(self) -> None:
        reader = self.reader(max_line=0)
        self.assertEqual(reader.max_line, HARD_LINE_LIMIT)
        reader.feed(b"z" * 5000 + b"\r\n.\r\n")
        self.assertFalse(reader.long_line)

    def test_rfc1870_databytes_exact_fit_accepted(self) -> None:
        reader = self.reader(databytes=6)
        reader.feed(b"abcde\r\n.\r\n")
        self.assertFalse(reader.too_big)
        self.assertEqual(self.stored(), b"abcde\n")

    def test_rfc1870_databytes_exceeded_stops_storing_but_reads_on(self) -> None:
        reader = self.reader(databytes=10)
        reader.feed(b"12345\r\n")
        reader.feed(b"67890\r\n")
        self.assertTrue(reader.too_big)
        self.assertIsNone(reader.feed(b"more\r\nmore\r\n"))
        self.assertEqual(reader.feed(b".\r\nNOOP\r\n"), b"NOOP\r\n")
        self.assertEqual(self.stored(), b"12345\n")
        self.assertEqual(reader.size, 22)


class LongLineSearchTests(unittest.SynchronousTestCase):
    """has_long_line looks at one byte every ``limit`` bytes; it must agree with splitting into lines."""

    def test_agrees_with_splitting(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        from qptwisted.smtp.receiver import has_long_line

        @settings(max_examples=500, deadline=None)
        @given(st.lists(st.integers(0, 40), max_size=30), st.integers(1, 20))
        def check(lengths: list[int], limit: int) -> None:
            text = b"".join(b"x" * n + b"\n" for n in lengths)
            self.assertEqual(has_long_line(text, limit), any(n > limit for n in lengths), (lengths, limit))

        check()
