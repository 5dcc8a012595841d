"""qptwisted.lib.scanner: addresses, sizes, the message in chunks, flow control, the HTTP body producer."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from qptwisted import ConfigError
from qptwisted.lib.scanner import (
    MessageBodyProducer,
    ScannerAddress,
    ScannerConnection,
    message_chunks,
    message_size,
    parse_size,
    stream_message,
)
from qptwisted.testing import make_engine, make_transaction


class AddressTests(unittest.TestCase):
    def test_forms(self) -> None:
        parse = ScannerAddress.parse
        self.assertEqual(parse("127.0.0.1:783"), ScannerAddress("127.0.0.1", 783))
        self.assertEqual(parse("spamd.internal", 783), ScannerAddress("spamd.internal", 783))
        self.assertEqual(parse("[::1]:3310"), ScannerAddress("::1", 3310))
        self.assertEqual(parse("::1", 3310), ScannerAddress("::1", 3310))
        self.assertEqual(parse("/run/clamd.ctl"), ScannerAddress(path="/run/clamd.ctl"))
        self.assertEqual(parse("unix:/run/milter.sock"), ScannerAddress(path="/run/milter.sock"))
        self.assertEqual(parse("local:/run/milter.sock"), ScannerAddress(path="/run/milter.sock"))
        self.assertEqual(parse("inet:8891@127.0.0.1"), ScannerAddress("127.0.0.1", 8891))
        self.assertEqual(parse("inet6:8891@[::1]"), ScannerAddress("::1", 8891))
        self.assertEqual(str(parse("[::1]:3310")), "[::1]:3310")
        self.assertEqual(str(parse("/run/x")), "/run/x")

    def test_bad_forms(self) -> None:
        for text in ("unix:relative", "host", ":25", "host:99999", "host:port"):
            with self.assertRaises(ValueError, msg=text):
                ScannerAddress.parse(text)

    def test_a_bad_address_stops_the_start_naming_the_plugin(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            make_engine(["virus/clamdscan clamd_socket unix:relative"])
        self.assertIn("plugin virus/clamdscan: argument clamd_socket", str(caught.exception))
        with self.assertRaises(ConfigError):
            make_engine(["milter"])  # the socket is required


class SizeTests(unittest.TestCase):
    def test_sizes(self) -> None:
        self.assertEqual([parse_size(text) for text in ("0", "512000", "500k", "20M", "1G", "1.5k", "10MB")],
                         [0, 512000, 512000, 20 << 20, 1 << 30, 1536, 10 << 20])
        with self.assertRaises(ValueError):
            parse_size("lots")
        with self.assertRaises(ConfigError):
            make_engine(["spamassassin max_size lots"])


class Recorder:
    """A plugin stand-in that runs blocking reads inline but counts them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.thread_reads = 0

    def defer_to_thread(self, function: Any, *args: Any) -> Deferred[Any]:
        self.thread_reads += 1
        return self.engine.defer_to_thread(function, *args)


class ChunkTests(unittest.TestCase):
    def chunks(self, message: bytes, threshold: int, **options: Any) -> tuple[list[bytes], Recorder, Any]:
        engine = make_engine(config={"size_threshold": str(threshold)})
        transaction = make_transaction(engine, message=message)
        self.addCleanup(transaction.close)
        plugin = Recorder(engine)

        async def collect() -> list[bytes]:
            return [chunk async for chunk in message_chunks(plugin, transaction, **options)]  # type: ignore

        return self.successResultOf(Deferred.fromCoroutine(collect())), plugin, transaction

    def test_body_in_memory_is_cut_in_place(self) -> None:
        chunks, plugin, transaction = self.chunks(b"Subject: x\n\n" + b"a" * 250, 1 << 20, chunk_size=100)
        self.assertEqual(b"".join(chunks), transaction.message_bytes())
        self.assertTrue(all(len(chunk) <= 100 for chunk in chunks))
        self.assertEqual(plugin.thread_reads, 0)
        self.assertEqual(message_size(transaction), len(transaction.message_bytes()))

    def test_spooled_body_is_read_chunk_by_chunk_on_the_thread_pool(self) -> None:
        body = b"line\n" * 60_000  # 300,000 bytes: spooled
        chunks, plugin, transaction = self.chunks(b"Subject: x\n\n" + body, 1024)
        self.assertIsNotNone(transaction.body.filename)
        self.assertEqual(b"".join(chunks), transaction.message_bytes())
        self.assertEqual(max(len(chunk) for chunk in chunks), 1 << 16)
        self.assertEqual(plugin.thread_reads, 6)  # five chunks and the end of the file

    def test_crlf_and_body_only(self) -> None:
        chunks, _, _ = self.chunks(b"Subject: x\n\none\ntwo\n", 1024, crlf=True, header=False, chunk_size=5)
        self.assertEqual(b"".join(chunks), b"one\r\ntwo\r\n")
        self.assertTrue(all(len(chunk) <= 5 for chunk in chunks))


class FlowControlTests(unittest.TestCase):
    def test_send_waits_while_the_socket_is_full(self) -> None:
        engine = make_engine(config={"size_threshold": "1024"})
        transaction = make_transaction(engine, message=b"Subject: x\n\n" + b"z" * 300_000)
        self.addCleanup(transaction.close)
        connection = ScannerConnection()
        transport = StringTransport()
        connection.makeConnection(transport)
        self.assertIs(transport.producer, connection)
        connection.pauseProducing()
        done = Deferred.fromCoroutine(stream_message(Recorder(engine), transaction, connection))  # type: ignore
        self.assertNoResult(done)
        self.assertLessEqual(len(transport.value()), 1 << 16)  # one chunk written, then it waits
        written = len(transport.value())
        connection.resumeProducing()
        self.assertTrue(self.successResultOf(done))
        self.assertGreater(len(transport.value()), written)
        self.assertEqual(transport.value(), transaction.message_bytes())

    def test_stop_when_the_daemon_answers_early(self) -> None:
        engine = make_engine()
        transaction = make_transaction(engine, message=b"Subject: x\n\n" + b"z" * 200_000)
        connection = ScannerConnection()
        connection.makeConnection(StringTransport())
        connection.dataReceived(b"INSTREAM size limit exceeded. ERROR\0")
        done = Deferred.fromCoroutine(stream_message(Recorder(engine), transaction, connection,  # type: ignore
                                                     stop=lambda: bool(connection.buffer)))
        self.assertFalse(self.successResultOf(done))


class BodyProducerTests(unittest.TestCase):
    def test_produces_the_message_with_pause_and_resume(self) -> None:
        engine = make_engine(config={"size_threshold": "1024"})
        transaction = make_transaction(engine, message=b"Subject: x\n\n" + b"q" * 200_000)
        self.addCleanup(transaction.close)
        producer = MessageBodyProducer(Recorder(engine), transaction)  # type: ignore[arg-type]
        self.assertEqual(producer.length, len(transaction.message_bytes()))
        consumer = StringTransport()
        producer.pauseProducing()
        finished = producer.startProducing(consumer)
        self.assertNoResult(finished)
        producer.resumeProducing()
        self.successResultOf(finished)
        self.assertEqual(consumer.value(), transaction.message_bytes())

    def test_stopped_producer_never_fires(self) -> None:
        engine = make_engine()
        transaction = make_transaction(engine, message=b"Subject: x\n\nbody\n")
        producer = MessageBodyProducer(Recorder(engine), transaction)  # type: ignore[arg-type]
        producer.pauseProducing()
        finished = producer.startProducing(StringTransport())
        producer.stopProducing()
        self.assertNoResult(finished)
