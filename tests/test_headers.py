"""Headers: byte-exact storage, decoded reading, edits on bytes; the header splitter."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted import Headers
from qptwisted.mail.headers import HeaderSplitter, split_header

RAW = (b"Received: from a\n\tby b; Thu, 1 Jan 1970 00:00:00 +0000\n"
       b"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\n"
       b"From: =?ISO-8859-1?Q?J=F6rg?= <joerg@example.org>\n"
       b"X-Raw: caf\xc3\xa9 au lait\n"
       b"X-Odd: a\x0bb\x0cc\x1cd\n"
       b"subject: second\n")


class HeadersTests(unittest.TestCase):
    def test_unchanged_headers_are_stored_byte_for_byte(self) -> None:
        headers = Headers(RAW)
        self.assertEqual(headers.to_bytes(), RAW)
        headers.get("Subject")  # reading changes nothing
        self.assertEqual(headers.to_bytes(), RAW)

    def test_values_are_decoded_str(self) -> None:
        headers = Headers(RAW)
        self.assertEqual(headers.get("subject"), "Grüße aus Köln")
        self.assertEqual(headers["From"], "Jörg <joerg@example.org>")
        self.assertEqual(headers.get("X-Raw"), "café au lait")
        self.assertEqual(headers.get_all("SUBJECT"), ["Grüße aus Köln", "second"])
        self.assertEqual(headers.get("Received"), "from a\tby b; Thu, 1 Jan 1970 00:00:00 +0000")
        self.assertIsNone(headers.get("Missing"))
        self.assertEqual(headers.get_all("Missing", []), [])
        self.assertIn("x-odd", headers)
        self.assertEqual(headers.keys(), ["Received", "Subject", "From", "X-Raw", "X-Odd", "subject"])

    def test_control_bytes_neither_break_reading_nor_storing(self) -> None:
        headers = Headers(RAW)
        self.assertIn("a", headers.get("X-Odd") or "")
        headers.prepend("Received", "from us")
        self.assertTrue(headers.to_bytes().endswith(RAW))

    def test_edits_work_on_the_bytes(self) -> None:
        headers = Headers(RAW)
        headers.prepend("Received", "from c\n\tby d")
        headers.add("X-Added", "yes")
        self.assertEqual(headers.remove("subject"), 2)
        self.assertEqual(headers.rename("X-Raw", "X-Old-Raw"), 1)
        headers.replace("From", "<new@example.org>")
        out = headers.to_bytes()
        self.assertTrue(out.startswith(b"Received: from c\n\tby d\nReceived: from a\n"))
        self.assertIn(b"X-Old-Raw: caf\xc3\xa9 au lait\n", out)
        self.assertNotIn(b"Subject", out)
        self.assertTrue(out.endswith(b"X-Added: yes\n"))
        self.assertEqual(headers.get("From"), "new@example.org")
        del headers["X-Added"]
        self.assertNotIn("X-Added", headers)

    def test_insert_and_edit_one_occurrence(self) -> None:
        headers = Headers(b"A: 1\nX: first\nB: 2\nX: second\n")
        headers.insert(1, "Y", "inserted")
        headers.insert(99, "Z", "last")
        headers.replace("X", "changed", occurrence=2)
        headers.replace("X", "added", occurrence=3)
        self.assertEqual(headers.remove("X", occurrence=1), 1)
        self.assertEqual(headers.remove("X", occurrence=5), 0)
        self.assertEqual(headers.to_bytes(), b"A: 1\nY: inserted\nB: 2\nX: changed\nZ: last\nX: added\n")
        self.assertEqual(Headers(b"A: 1\nB:  two\n\tlines\n").raw_items(),
                         [("A", b" 1\n"), ("B", b"  two\n\tlines\n")])

    def test_a_value_cannot_smuggle_a_new_field(self) -> None:
        headers = Headers()
        headers.add("X-Note", "one\nBcc: victim@example.org")
        self.assertEqual(headers.keys(), ["X-Note"])
        with self.assertRaises(ValueError):
            headers.add("Bad Name", "x")


class SplitterTests(unittest.TestCase):
    def test_blank_line_ends_the_header(self) -> None:
        self.assertEqual(split_header(b"A: 1\n B\n\nbody\n"), (b"A: 1\n B\n", b"body\n"))

    def test_non_header_line_starts_the_body(self) -> None:
        self.assertEqual(split_header(b"A: 1\nnot a header\nmore\n"), (b"A: 1\n", b"not a header\nmore\n"))
        self.assertEqual(split_header(b" leading space\nA: 1\n"), (b"", b" leading space\nA: 1\n"))

    def test_piece_by_piece_is_the_same_as_at_once(self) -> None:
        message = b"A: 1\nB: 2\n\tcont\nC: 3\n\nbody line\n"
        for size in (1, 2, 3, 7):
            splitter = HeaderSplitter()
            result = None
            for start in range(0, len(message), size):
                result = splitter.feed(message[start:start + size])
                if result is not None:
                    break
            assert result is not None
            header, body_start = result
            self.assertEqual(header, b"A: 1\nB: 2\n\tcont\nC: 3\n", size)
            self.assertTrue(b"body line\n".startswith(body_start), size)

    def test_each_piece_is_scanned_once(self) -> None:
        # a large header sent one line per packet: the scan position only moves forward
        splitter = HeaderSplitter()
        for number in range(2000):
            self.assertIsNone(splitter.feed(b"X-Line-%d: %s\n" % (number, b"v" * 60)))
            self.assertEqual(splitter._scanned, splitter.size)
