"""RFC 5321 paths (reference §4 and §9.5)."""

from __future__ import annotations

from twisted.trial import unittest

from qptwisted.mail.address import NULL_SENDER, Address, AddressError, parse_params, split_path


class ParseTests(unittest.SynchronousTestCase):
    def test_plain_mailbox(self) -> None:
        address = Address.parse("<alice@example.com>")
        self.assertEqual((address.user, address.host), ("alice", "example.com"))
        self.assertEqual(str(address), "<alice@example.com>")
        self.assertEqual(address.address, "alice@example.com")

    def test_rfc5321_4_5_5_null_path(self) -> None:
        address = Address.parse("<>")
        self.assertIs(address, NULL_SENDER)
        self.assertTrue(address.is_null)
        self.assertEqual(str(address), "<>")
        self.assertEqual(address.address, "")

    def test_null_path_refused_for_recipients(self) -> None:
        self.assertRaises(AddressError, Address.parse, "<>", allow_null=False)

    def test_rfc5321_4_1_1_3_postmaster_only_for_rcpt(self) -> None:
        address = Address.parse("<Postmaster>", allow_postmaster=True)
        self.assertEqual((address.user, address.host), ("Postmaster", ""))
        self.assertEqual(str(address), "<Postmaster>")
        self.assertFalse(address.is_null)
        self.assertRaises(AddressError, Address.parse, "<postmaster>")
        self.assertRaises(AddressError, Address.parse, "<abuse>", allow_postmaster=True)

    def test_angle_brackets_required(self) -> None:
        for bad in ("alice@example.com", "<alice@example.com", "alice@example.com>", "", "<"):
            self.assertRaises(AddressError, Address.parse, bad)

    def test_rfc5321_4_1_2_quoted_local_part(self) -> None:
        address = Address.parse('<"foo bar"@example.com>')
        self.assertEqual(address.user, "foo bar")
        self.assertEqual(str(address), '<"foo bar"@example.com>')

    def test_quoted_local_part_with_escapes(self) -> None:
        address = Address.parse(r'<"a\"b\\c"@example.com>')
        self.assertEqual(address.user, 'a"b\\c')
        self.assertEqual(address.address, r'"a\"b\\c"@example.com')
        self.assertEqual(Address.parse(str(address)), address)

    def test_quoting_only_when_needed(self) -> None:
        self.assertEqual(Address.parse('<"plain"@example.com>').address, "plain@example.com")
        self.assertEqual(Address.parse('<"a..b"@example.com>').address, '"a..b"@example.com')

    def test_invalid_mailboxes(self) -> None:
        for bad in ("<a b@example.com>", "<a@b c>", "<@example.com>", "<alice@>", "<alice>",
                    "<a..b@example.com>", "<.a@example.com>", "<bob@example.com.>", "<a@-x.com>",
                    '<"unterminated@example.com>', "<a@b@c>"):
            self.assertRaises(AddressError, Address.parse, bad)

    def test_rfc5321_4_1_3_ipv4_address_literal(self) -> None:
        address = Address.parse("<user@[192.0.2.1]>")
        self.assertEqual(address.host, "[192.0.2.1]")

    def test_rfc5321_4_1_3_ipv6_address_literal(self) -> None:
        address = Address.parse("<user@[IPv6:2001:db8::1]>")
        self.assertEqual(address.host, "[IPv6:2001:db8::1]")

    def test_rfc5321_4_1_3_bad_address_literals(self) -> None:
        for bad in ("<user@[192.0.2.256]>", "<user@[1.2.3]>", "<user@[IPv6:2001:db8::zz]>",
                    "<user@[IPv6:1.2.3.4]>", "<user@[not a literal]>", "<user@[]>"):
            self.assertRaises(AddressError, Address.parse, bad)

    def test_rfc5321_4_1_3_general_address_literal(self) -> None:
        self.assertEqual(Address.parse("<user@[x400:stuff]>").host, "[x400:stuff]")

    def test_rfc5321_appendix_c_source_route_stripped(self) -> None:
        address = Address.parse("<@relay1.test,@relay2.test:user@example.com>")
        self.assertEqual(str(address), "<user@example.com>")
        self.assertRaises(AddressError, Address.parse, "<@relay1.test user@example.com>")

    def test_rfc5321_4_5_3_1_1_local_part_too_long(self) -> None:
        Address.parse("<" + "a" * 64 + "@example.com>")
        self.assertRaises(AddressError, Address.parse, "<" + "a" * 65 + "@example.com>")

    def test_rfc5321_4_5_3_1_2_domain_too_long(self) -> None:
        domain = ".".join(["d" * 63] * 4)[:255]
        Address.parse(f"<a@{domain.rstrip('.')}>")
        too_long = ".".join(["d" * 63] * 5)
        self.assertRaises(AddressError, Address.parse, f"<a@{too_long}>")

    def test_rfc6531_utf8_needs_the_flag(self) -> None:
        with self.assertRaises(AddressError) as caught:
            Address.parse("<jörg@bücher.test>")
        self.assertIn("SMTPUTF8", str(caught.exception))
        address = Address.parse("<jörg@bücher.test>", utf8=True)
        self.assertEqual((address.user, address.host), ("jörg", "bücher.test"))
        self.assertEqual(str(address), "<jörg@bücher.test>")

    def test_rfc6531_utf8_quoted_local_part(self) -> None:
        self.assertEqual(Address.parse('<"jö rg"@example.com>', utf8=True).user, "jö rg")

    def test_utf8_local_part_length_counts_octets(self) -> None:
        self.assertRaises(AddressError, Address.parse, "<" + "ü" * 33 + "@example.com>", utf8=True)

    def test_canonical_lowercases_domain_only(self) -> None:
        address = Address.parse("<Bob@EXAMPLE.COM>")
        self.assertEqual(address.canonical, "Bob@example.com")
        self.assertEqual(str(address), "<Bob@EXAMPLE.COM>")

    def test_equality_ignores_notes(self) -> None:
        first, second = Address.parse("<a@b.test>"), Address.parse("<a@b.test>")
        first.notes["x"] = 1
        self.assertEqual(first, second)
        self.assertEqual(hash(first), hash(second))


class SplitPathTests(unittest.SynchronousTestCase):
    def test_path_and_params(self) -> None:
        self.assertEqual(split_path("<a@b.test> SIZE=10 BODY=8BITMIME"),
                         ("<a@b.test>", " SIZE=10 BODY=8BITMIME"))

    def test_surrounding_space(self) -> None:
        self.assertEqual(split_path("  <a@b.test>  "), ("<a@b.test>", ""))

    def test_quoted_space_and_bracket_kept(self) -> None:
        self.assertEqual(split_path('<"a >b"@c.test> X=1'), ('<"a >b"@c.test>', " X=1"))

    def test_escaped_quote(self) -> None:
        self.assertEqual(split_path(r'<"a\" >"@c.test>'), (r'<"a\" >"@c.test>', ""))

    def test_without_brackets_first_word(self) -> None:
        self.assertEqual(split_path("a@b.test SIZE=1"), ("a@b.test", "SIZE=1"))

    def test_unterminated(self) -> None:
        self.assertEqual(split_path("<a@b.test"), ("<a@b.test", ""))

    def test_empty(self) -> None:
        self.assertEqual(split_path(""), ("", ""))


class ParseParamsTests(unittest.SynchronousTestCase):
    def test_rfc5321_4_1_2_keywords_lower_cased(self) -> None:
        self.assertEqual(parse_params(" SIZE=10 Body=8BITMIME SMTPUTF8 "),
                         {"size": "10", "body": "8BITMIME", "smtputf8": None})

    def test_value_may_contain_equals(self) -> None:
        self.assertEqual(parse_params("ORCPT=rfc822;a=b@c.test"), {"orcpt": "rfc822;a=b@c.test"})

    def test_empty_value(self) -> None:
        self.assertEqual(parse_params("X-FOO="), {"x-foo": ""})

    def test_bad_keyword(self) -> None:
        for bad in ("=x", "-A=1", "A_B=1", "ü=1"):
            self.assertRaises(AddressError, parse_params, bad)

    def test_nothing(self) -> None:
        self.assertEqual(parse_params(""), {})
