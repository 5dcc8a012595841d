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


def reference_read(stream: bytes, max_line: int) -> tuple[bytes, bytes, bool, bool]:
    """DATA read line by line, as RFC 5321 words it: (stored, rest, bare newline, long line)."""
    end = (b"\r\n" + stream).find(b"\r\n.\r\n")
    content, rest = stream[:end], stream[end + 3:]
    lines = content.split(b"\r\n")[:-1] if content else []
    bare = any(b"\r" in line or b"\n" in line for line in lines)
    unstuffed = [line[1:] if line[:1] == b"." else line for line in lines]
    long_line = any(len(line) > max_line - 2 for line in unstuffed)
    return b"".join(line + b"\n" for line in unstuffed), rest, bare, long_line


class DifferentialTests(Base):
    """Whole-chunk passes must agree with a line-by-line reading, however the bytes are cut."""

    def test_every_cut_of_dotted_lines(self) -> None:
        for body in (b"a\r\n.b\r\n", b".a\r\n..\r\nb\r\n", b"ab\r\n.c\r\nd\r\n.\r\n", b"x\r\n..\r\n"):
            stream = body + b".\r\nQUIT\r\n"
            stored, rest, _, _ = reference_read(stream, 1000)
            for cut in range(1, len(stream)):
                reader = self.reader()
                first = reader.feed(stream[:cut])
                got = first + stream[cut:] if first is not None else reader.feed(stream[cut:])
                self.assertEqual((got, self.stored()), (rest, stored), (stream, cut))

    def test_agrees_with_reading_line_by_line(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        pieces = st.sampled_from([b"a", b"bc", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r\n",
                                  b"\n.\n", b"x" * 12])

        @settings(max_examples=1500, deadline=None)
        @given(st.lists(pieces, max_size=40), st.lists(st.integers(0, 200), max_size=8),
               st.sampled_from([8, 16, 1000]))
        def check(body: list[bytes], cuts: list[int], max_line: int) -> None:
            stream = b"".join(body) + b"\r\n.\r\nNOOP\r\n"
            stored, rest, bare, long_line = reference_read(stream, max_line)
            reader = self.reader(max_line=max_line)
            got: bytes | None = None
            start = 0
            for cut in sorted({min(cut, len(stream)) for cut in cuts} | {len(stream)}):
                if got is None and cut > start:
                    got = reader.feed(stream[start:cut])
                    if got is not None:
                        got += stream[cut:]
                    start = cut
            self.assertEqual(got, rest, stream)
            # a line too long is cut unread, so a bare newline inside it may go unseen: refused all the same
            self.assertEqual(reader.bare_newline or reader.long_line, bare or long_line, stream)
            if not long_line:
                self.assertEqual(reader.bare_newline, bare, stream)
            if not bare:
                self.assertEqual(reader.long_line, long_line, stream)
            if not (bare or long_line):
                self.assertEqual(self.stored(), stored, stream)
                self.assertEqual(reader.size, len(stored))

        check()

    def test_bdat_chunks_agree_with_replacing_crlf(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        from qptwisted.smtp.receiver import ChunkReader

        @settings(max_examples=500, deadline=None)
        @given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\r\r\n", b"xyz"]), max_size=30),
               st.lists(st.integers(0, 60), max_size=6))
        def check(body: list[bytes], cuts: list[int]) -> None:
            data = b"".join(body)
            pieces: list[bytes] = []
            reader = ChunkReader(pieces.append)
            bounds = [0, *sorted({min(cut, len(data)) for cut in cuts}), len(data)]
            for start, end in zip(bounds, bounds[1:], strict=False):
                reader.expect(end - start)
                self.assertEqual(reader.feed(data[start:end] + b"NEXT"), b"NEXT")
            reader.finish()
            self.assertEqual(b"".join(pieces), data.replace(b"\r\n", b"\n"), (data, bounds))

        check()
