"""The cluster on loopback: HAProxy in front of two qptwisted nodes sharing Redis, mail into RabbitMQ.

HAProxy (TCP, round robin, ``send-proxy-v2``, source address 127.0.0.2,
health checks with a LOCAL header) balances over two nodes, each ``qpsmtpd
--workers 2`` with ``proxy_hosts`` = 127.0.0.2; karma, limit and greylisting
keep their state in one Redis; ``queue/amqp`` publishes to one RabbitMQ queue.
Twenty clients, each from its own loopback address, send 2,000 messages
through HAProxy while one node is killed with SIGKILL (master and workers:
the machine died) and started again. The checks are the promises of
docs/scaling.md: a 250 means the message is in the broker, exactly once; the
clients of the dead node see connection errors or 4xx, never 5xx; every
node's Received names the client address HAProxy saw; a greylisting
triplet recorded on one node is known on the other.

Every daemon runs on free ports in a temporary directory and is started
once for the module; a component that is missing skips with the reason.
Waits are bounded; nothing asserts how long anything took.
"""

from __future__ import annotations

import atexit
import email
import shutil
import smtplib
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from qptwisted.testing import write_config
from tests.cluster_support import HAProxy, Node, Redis, free_port, shared_rabbitmq, wait_for

CLIENTS = 20
MESSAGES_PER_CLIENT = 100
PER_SESSION = 10  # messages per connection before QUIT
KILL_AFTER = 600  # accepted messages before node A dies
MAX_ATTEMPTS = 30
QUEUE = "cluster"
PROXY = "127.0.0.2"  # HAProxy's source address towards the nodes


def client_ip(index: int) -> str:
    return f"127.0.0.{10 + index}"


PLUGINS = """\
karma redis {redis}
limit concurrency 50 connections 100000/1m sender_messages 100000/1h concurrency_ttl 10 redis {redis}
greylisting remote_ip 1 sender 1 recipient 1 black_timeout 2 redis {redis}
rcpt_ok
queue/amqp {amqp} routing_key={queue} confirm_timeout=10
"""


class Cluster:
    """Redis, RabbitMQ, two nodes and HAProxy, started once for the module."""

    def __init__(self) -> None:
        self.broker = shared_rabbitmq()
        self.root = Path(tempfile.mkdtemp(prefix="qpt-cluster-"))
        self.redis: Redis | None = None
        self.nodes: list[Node] = []
        self.haproxy: HAProxy | None = None
        try:
            self.broker.declare(QUEUE)
            self.redis = Redis()
            for name in ("nodeA", "nodeB"):
                config = write_config(self.root / name / "config", {
                    "me": f"{name}.test",
                    "rcpthosts": "cluster.test",
                    "proxy_hosts": PROXY,
                    "greylist_exclude_files": "greylist_exclude",
                    "greylist_exclude": "127.0.0.0/27",  # the load clients; the greylisting test is .77
                    "loglevel": "4",
                    "spool_dir": str(self.root / name / "spool"),
                    "plugins": PLUGINS.format(redis=self.redis.url, amqp=self.broker.url,
                                              queue=QUEUE).splitlines(),
                })
                self.nodes.append(Node(name, config, free_port()))
            for node in self.nodes:
                node.start()
            self.haproxy = HAProxy([node.port for node in self.nodes], source=PROXY)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.root, True)


_state: dict[str, Any] = {}


def cluster() -> Cluster:
    if "skip" in _state:
        raise unittest.SkipTest(_state["skip"])
    if "cluster" not in _state:
        try:
            _state["cluster"] = Cluster()
        except unittest.SkipTest as skip:
            _state["skip"] = str(skip.args[0])
            raise
        atexit.register(_state["cluster"].stop)
    return _state["cluster"]  # type: ignore[no-any-return]


def message(token: str, attempt: str, sender: str, rcpt: str) -> bytes:
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: cluster {token}\r\n"
            f"Message-Id: <{attempt}@cluster.test>\r\nX-Token: {token}\r\nX-Attempt: {attempt}\r\n\r\n"
            f"Message {token}, attempt {attempt}.\r\n").encode()


def transaction(smtp: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> int:
    """MAIL, RCPT, DATA; the code that ended it (250 for a queued message)."""
    code, _ = smtp.mail(sender)
    if code != 250:
        return code
    code, _ = smtp.rcpt(rcpt)
    if code != 250:
        return code
    try:
        code, _ = smtp.data(data)
    except smtplib.SMTPDataError as err:
        return err.smtp_code
    return code


def quit_quietly(smtp: smtplib.SMTP) -> None:
    """QUIT after the last message; the node may have died since its 250, which changes nothing."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def queued(broker: Any) -> list[tuple[dict[str, Any], email.message.Message]]:
    """Every message in the cluster queue, as (AMQP headers, parsed message); the queue is emptied."""
    return [(dict(properties.headers or {}), email.message_from_bytes(body))
            for properties, body in broker.drain(QUEUE)]


class ClusterTests(unittest.TestCase):
    timeout = 600

    def setUp(self) -> None:
        self.cluster = cluster()

    def test_greylisting_triplet_shared_between_nodes(self) -> None:
        node_a, node_b = self.cluster.nodes
        sender, rcpt = "grey@example.org", "grey@cluster.test"
        data = message("grey", "grey-1", sender, rcpt)

        def deliver(node: Node) -> int:
            with smtplib.SMTP(timeout=60, source_address=("127.0.0.77", 0)) as smtp:
                smtp.connect("127.0.0.1", node.port)
                smtp.ehlo("grey.example")
                return transaction(smtp, sender, rcpt, data)

        self.assertEqual(deliver(node_a), 450)  # first seen, on node A
        time.sleep(2.5)  # the triplet's black_timeout (2 s) passes; this waits, it does not measure
        self.assertEqual(deliver(node_b), 250)  # node B knows the triplet node A saw
        grey = [msg for headers, msg in queued(self.cluster.broker) if msg["X-Token"] == "grey"]
        self.assertEqual(len(grey), 1)
        self.assertIn("(127.0.0.77)", grey[0]["Received"])
        self.assertIn("by nodeB.test", grey[0]["Received"])

    def test_messages_through_haproxy_while_a_node_dies(self) -> None:
        broker, haproxy = self.cluster.broker, self.cluster.haproxy
        assert haproxy is not None
        node_a = self.cluster.nodes[0]
        queued(broker)  # start from an empty queue
        outcomes: dict[str, str] = {}  # attempt -> "250", "4xx code", or "connection: ..."
        accepted: dict[str, str] = {}  # token -> the attempt that got 250
        lock = threading.Lock()
        errors: list[BaseException] = []

        def client(index: int) -> None:
            ip = client_ip(index)
            smtp: smtplib.SMTP | None = None
            in_session = 0
            try:
                for number in range(MESSAGES_PER_CLIENT):
                    token = f"m{index:02d}-{number:03d}"
                    sender, rcpt = f"c{index}@example.org", f"r{number % 7}@cluster.test"
                    for attempt_number in range(MAX_ATTEMPTS):
                        attempt = f"{token}-a{attempt_number}"
                        try:
                            if smtp is None:
                                smtp = smtplib.SMTP(timeout=60, source_address=(ip, 0))
                                smtp.connect("127.0.0.1", haproxy.port)
                                smtp.ehlo(f"client{index}.example")
                                in_session = 0
                            code = transaction(smtp, sender, rcpt, message(token, attempt, sender, rcpt))
                            outcome = str(code)
                            if code != 250:
                                if code == 421:
                                    smtp.close()
                                    smtp = None
                                else:
                                    smtp.rset()
                        except (smtplib.SMTPException, OSError) as err:
                            outcome = f"connection: {type(err).__name__}"
                            if smtp is not None:
                                smtp.close()
                            smtp = None
                        with lock:
                            outcomes[attempt] = outcome
                            if outcome == "250":
                                accepted[token] = attempt
                        if outcome == "250":
                            break
                        time.sleep(0.1)  # a client's pause before it tries again
                    in_session += 1
                    if smtp is not None and in_session >= PER_SESSION:
                        quit_quietly(smtp)
                        smtp = None
                if smtp is not None:
                    quit_quietly(smtp)
            except BaseException as err:  # noqa: B036 - reported by the test below
                errors.append(err)

        threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(CLIENTS)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(accepted) >= KILL_AFTER or not any(t.is_alive() for t in threads),
                 f"{KILL_AFTER} accepted messages", 300)
        node_a.kill()
        node_a.start()
        # the late messages below must find node A in rotation again, however fast the clients finished
        wait_for(lambda: haproxy.server_up("node1"), "HAProxy's checks to see node A up", 60)
        for thread in threads:
            thread.join(300)
        self.assertFalse(any(thread.is_alive() for thread in threads), "clients did not finish")
        self.assertEqual(errors, [])

        # only 250, 4xx and connection errors; every message accepted in the end
        kinds = Counter(outcome if outcome == "250" or outcome.startswith("connection") else outcome[0] + "xx"
                        for outcome in outcomes.values())
        self.assertEqual(set(kinds) - {"250", "4xx"} - {k for k in kinds if k.startswith("connection")},
                         set(), kinds)
        self.assertEqual(len(accepted), CLIENTS * MESSAGES_PER_CLIENT, kinds)
        self.assertEqual(node_a.starts, 2)

        # after its restart node A takes its share again
        for number in range(6):
            with smtplib.SMTP(timeout=60, source_address=(client_ip(0), 0)) as smtp:
                smtp.connect("127.0.0.1", haproxy.port)
                smtp.ehlo("late.example")
                token = f"late-{number}"
                self.assertEqual(transaction(smtp, "late@example.org", "late@cluster.test",
                                             message(token, token, "late@example.org", "late@cluster.test")),
                                 250)

        seen: Counter[str] = Counter()
        by_node: defaultdict[str, int] = defaultdict(int)
        late_nodes = set()
        for headers, msg in queued(broker):
            attempt, token, received = msg["X-Attempt"], msg["X-Token"], msg["Received"]
            node = "nodeA" if "by nodeA.test" in received else "nodeB" if "by nodeB.test" in received else "?"
            if token.startswith("late-"):
                late_nodes.add(node)
                continue
            seen[attempt] += 1
            by_node[node] += 1
            index = int(token[1:3])
            # the real client, as HAProxy saw it: in Received and in the envelope headers
            self.assertIn(f"({client_ip(index)})", received)
            self.assertEqual(headers["x-client-ip"], client_ip(index))
        for attempt in accepted.values():
            self.assertEqual(seen[attempt], 1, f"{attempt} got 250 and is queued {seen[attempt]} times")
        duplicates = [attempt for attempt in seen if outcomes.get(attempt) != "250"]
        for attempt in duplicates:  # confirmed by the broker, but the node died before its 250
            self.assertEqual(seen[attempt], 1)
            self.assertTrue(outcomes[attempt].startswith("connection"), outcomes[attempt])
        self.assertEqual(set(by_node), {"nodeA", "nodeB"}, by_node)
        self.assertEqual(late_nodes, {"nodeA", "nodeB"})
