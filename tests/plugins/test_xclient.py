"""xclient: Postfix's XCLIENT from trusted front ends, and queue/smtp-forward talking to it."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from qpplugins.xclient import XClientError, parse_attributes
from qptwisted import DECLINED, DENY, OK, HookAnswer, Plugin, Transaction
from qptwisted.lib.smtpclient import xtext, xtext_decode
from qptwisted.testing import CaptureQueue, SMTPDialogue, make_engine, make_transaction, run_hook


class DenyOne(Plugin):
    """connect: refuses 192.0.2.66, marks the client it saw."""

    name = "test_xclient_deny_one"

    def hook_connect(self, transaction: Transaction) -> HookAnswer:
        connection = transaction.connection
        connection.notes["seen_at_connect"] = connection.remote_ip
        if connection.remote_ip == "192.0.2.66":
            return DENY, "you are listed"
        return DECLINED


class AttributeTests(unittest.TestCase):
    def test_xtext(self) -> None:
        self.assertEqual(xtext_decode("a+2Bb+3Dc"), "a+b=c")
        self.assertEqual(xtext_decode(xtext("Jürgen + =x")), "Jürgen + =x")

    def test_parse(self) -> None:
        self.assertEqual(parse_attributes(["addr=192.0.2.1", "NAME=[UNAVAILABLE]"]),
                         {"ADDR": "192.0.2.1", "NAME": "[UNAVAILABLE]"})
        for bad in (["ADDR"], ["ADDR="], ["COLOR=blue"], ["HELO=a+0Ab"], ["HELO=" + "x" * 256]):
            self.assertRaises(XClientError, parse_attributes, bad)


class XClientTests(unittest.TestCase):
    def dialogue(self, remote_ip: str = "127.0.0.1", line: str = "xclient 127.0.0.1 ::1") -> SMTPDialogue:
        engine = make_engine([line, DenyOne, "relay", "rcpt_ok", CaptureQueue],
                             config={"rcpthosts": "example.test", "relayclients": "127.0.0.1"})
        self.engine = engine
        smtp = SMTPDialogue(engine, remote_ip=remote_ip)
        self.addCleanup(smtp.close)
        return smtp

    def test_offered_to_trusted_hosts_only(self) -> None:
        trusted = self.dialogue().send("EHLO front.example")[0]
        self.assertIn("XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT", trusted.lines)
        other = self.dialogue("192.0.2.9").send("EHLO x.example")[0]
        self.assertFalse(any(line.startswith("XCLIENT") for line in other.lines))

    def test_untrusted_gets_550(self) -> None:
        smtp = self.dialogue("192.0.2.9")
        [reply] = smtp.send("XCLIENT ADDR=192.0.2.1")
        self.assertEqual((reply.code, reply.enhanced), (550, "5.7.0"))
        self.assertEqual(smtp.session.connection.remote_ip, "192.0.2.9")

    def test_real_client_everywhere(self) -> None:
        smtp = self.dialogue()
        smtp.send("EHLO front.example")
        self.assertTrue(smtp.session.connection.relay_client)  # the front end itself may relay
        [greeting] = smtp.send("XCLIENT ADDR=IPV6:2001:db8::5 NAME=client.example PORT=4711 "
                               "HELO=helo.client.example PROTO=ESMTP")
        self.assertEqual(greeting.code, 220)
        connection = smtp.session.connection
        self.assertEqual((connection.remote_ip, connection.remote_host, connection.remote_port),
                         ("2001:db8::5", "client.example", 4711))
        self.assertFalse(connection.relay_client)  # judged again for the real client
        self.assertEqual(connection.notes["seen_at_connect"], "2001:db8::5")
        self.assertEqual(connection.notes["xclient_proto"], "ESMTP")
        [ehlo] = smtp.send("EHLO front.example")
        self.assertIn("Hi client.example [2001:db8::5]", ehlo.lines[0])
        replies = smtp.deliver("<a@example.org>", ["<b@example.test>"], "Subject: x\n\nhi\n")
        self.assertTrue(replies.accepted, replies)
        [stored] = self.engine.plugin("testing/capture").messages  # type: ignore[attr-defined]
        self.assertIn(b"from client.example (HELO helo.client.example) (2001:db8::5)", stored)

    def test_login_authenticates(self) -> None:
        smtp = self.dialogue()
        smtp.send("EHLO front.example")
        self.assertEqual(smtp.send("XCLIENT ADDR=192.0.2.7 LOGIN=alice")[0].code, 220)
        smtp.send("EHLO x.example")
        self.assertEqual((smtp.session.connection.auth_user, smtp.session.connection.auth_mechanism),
                         ("alice", "XCLIENT"))
        replies = smtp.deliver("<alice@example.org>", ["<b@example.test>"], "Subject: x\n\nhi\n")
        [stored] = self.engine.plugin("testing/capture").messages  # type: ignore[attr-defined]
        self.assertTrue(replies.accepted)
        self.assertIn(b"with ESMTPA", stored)

    def test_connect_refusal_for_the_real_client(self) -> None:
        smtp = self.dialogue()
        [reply] = smtp.send("XCLIENT ADDR=192.0.2.66")
        self.assertEqual((reply.code, reply.text), (550, "you are listed"))
        self.assertTrue(smtp.closed)

    def test_errors(self) -> None:
        smtp = self.dialogue()
        smtp.send("EHLO front.example")
        for command, code in [("XCLIENT", 501), ("XCLIENT ADDR=999.1.1.1", 501), ("XCLIENT PORT=70000", 501),
                              ("XCLIENT NAME=192.0.2.1", 501), ("XCLIENT NAME=bad_name!", 501),
                              ("XCLIENT PROTO=LMTP", 501), ("XCLIENT FOO=1", 501)]:
            self.assertEqual(smtp.send(command)[0].code, code, command)
        self.assertEqual(smtp.session.connection.remote_ip, "127.0.0.1")  # nothing half-applied
        smtp.send("MAIL FROM:<a@example.org>")
        [reply] = smtp.send("XCLIENT ADDR=192.0.2.1")
        self.assertEqual((reply.code, reply.text), (503, "Error: MAIL transaction in progress"))

    def test_trust_stays_for_a_second_xclient(self) -> None:
        smtp = self.dialogue()
        self.assertEqual(smtp.send("XCLIENT ADDR=192.0.2.10")[0].code, 220)
        self.assertEqual(smtp.send("XCLIENT ADDR=192.0.2.11 NAME=[TEMPUNAVAIL]")[0].code, 220)
        self.assertEqual(smtp.session.connection.remote_ip, "192.0.2.11")
        self.assertIsNone(smtp.session.connection.remote_host)

    def test_connection_counted_under_the_address_it_came_from(self) -> None:
        smtp = self.dialogue()
        self.assertEqual(dict(smtp.factory.per_ip), {"127.0.0.1": 1})
        smtp.send("XCLIENT ADDR=192.0.2.12")
        smtp.close()
        self.assertEqual(dict(smtp.factory.per_ip), {})

    def test_hosts_from_config(self) -> None:
        engine = make_engine(["xclient"], config={"xclient_hosts": ["# front ends", "192.0.2.0/24"]})
        smtp = SMTPDialogue(engine, remote_ip="192.0.2.200")
        self.addCleanup(smtp.close)
        self.assertEqual(smtp.send("XCLIENT ADDR=198.51.100.1")[0].code, 220)


class ForwardToXClientTests(unittest.TestCase):
    """queue/smtp-forward with ``xclient`` in front of a qptwisted with the xclient plugin."""

    @defer.inlineCallbacks
    def test_downstream_sees_the_real_client(self) -> Any:
        from qptwisted.service.server import SMTPFactory

        downstream = make_engine(["xclient 127.0.0.1", "rcpt_ok", CaptureQueue], clock=reactor,
                                 config={"rcpthosts": "example.test", "me": "down.test"})
        port = reactor.listenTCP(0, SMTPFactory(downstream), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        front = make_engine([f"queue/smtp-forward 127.0.0.1:{port.getHost().port} xclient starttls=no"],
                            clock=reactor)
        self.addCleanup(front.close)
        txn = make_transaction(front, sender="<a@example.org>", recipients=["<b@example.test>"],
                               message=b"Subject: fwd\n\nbody\n")
        connection = txn.connection
        connection.remote_ip, connection.remote_host = "2001:db8::77", "client.example"
        connection.hello, connection.hello_host, connection.auth_user = "ehlo", "helo.example", "alice"
        result = yield run_hook(front, "queue", txn)
        self.assertEqual(result.code, OK, result.message)
        [stored] = downstream.plugin("testing/capture").messages  # type: ignore[attr-defined]
        received = stored.split(b"\n")[0]
        self.assertIn(b"from client.example (HELO helo.example) (2001:db8::77)", received)
        self.assertIn(b"with ESMTPA", stored)

    def test_attributes_as_postfix_writes_them(self) -> None:
        engine = make_engine(["queue/smtp-forward 127.0.0.1:1 xforward"])
        self.addCleanup(engine.close)
        plugin = engine.plugin("queue/smtp-forward")
        txn = make_transaction(engine, sender="<a@example.org>", recipients=["<b@example.test>"])
        txn.connection.remote_ip, txn.connection.hello_host = "2001:db8::1", "h" * 300
        txn.connection.relay_client = True
        forwarded = plugin.client_attributes(txn, xclient=False)  # type: ignore[attr-defined]
        self.assertEqual((forwarded["ADDR"], forwarded["HELO"], forwarded["NAME"], forwarded["SOURCE"]),
                         ("IPV6:2001:db8::1", "[UNAVAILABLE]", "[UNAVAILABLE]", "LOCAL"))
        self.assertNotIn("IDENT", plugin.client_attributes(txn, xclient=True))  # type: ignore[attr-defined]

    def test_long_attribute_lists_are_split(self) -> None:
        from qptwisted.lib.smtpclient import MAX_ATTRIBUTE_LINE, attribute_lines

        attributes = {"NAME": "n" * 250, "ADDR": "192.0.2.1", "HELO": "h" * 250, "LOGIN": "a b"}
        lines = attribute_lines("XCLIENT", attributes, {"NAME", "ADDR", "HELO", "LOGIN"})
        self.assertEqual(len(lines), 2)
        self.assertTrue(all(len(line) <= MAX_ATTRIBUTE_LINE for line in lines))
        self.assertEqual(lines[1], "XCLIENT HELO=" + "h" * 250 + " LOGIN=a+20b")
        self.assertEqual(attribute_lines("XFORWARD", attributes, {"ADDR"}), ["XFORWARD ADDR=192.0.2.1"])
