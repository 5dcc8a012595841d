"""web_gateway: a relay client's mail to the application is posted to a web application on loopback."""

from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from qptwisted import DECLINED, DENYSOFT
from qptwisted.testing import make_connection, make_engine, make_transaction, run_hook
from qptwisted.testing.web import start_web_server

HERE = Path(__file__).resolve().parent
MESSAGE = ("Subject: Red chair\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=X\n\n--X\n"
           "Content-Type: text/plain\n\nFree to collect.\n--X\nContent-Type: image/jpeg\n"
           "Content-Disposition: attachment; filename=chair.jpg\n\nJPEG\n--X--\n")
CASES = [(True, 200, DECLINED), (False, 200, DECLINED), (True, 503, DENYSOFT)]  # relay client, HTTP, answer


class WebGatewayTests(unittest.TestCase):
    async def test_posts_the_mail_of_relay_clients(self) -> None:
        web = start_web_server(self)
        engine = make_engine([f"web_gateway {web.url} post@example.com"], plugin_dirs=[HERE], clock=reactor)
        for relay_client, web.status, code in CASES:
            transaction = make_transaction(engine, make_connection(relay_client=relay_client),
                                           "<me@example.org>", ["<post@example.com>"], MESSAGE)
            self.assertEqual((await run_hook(engine, "data_post", transaction)).code, code)
        posted, refused = web.requests  # the client that may not relay was not posted
        self.assertEqual(posted.args, {"title": [b"Red chair"], "body": [b"Free to collect."],
                                       "file1": [b"JPEG"]})
