"""qptwisted.testing.web: the loopback web application plugin tests post to."""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.trial import unittest

from qptwisted.testing.web import start_web_server


class WebServerTests(unittest.TestCase):
    async def test_records_forms_and_answers_with_the_status_asked_for(self) -> None:
        web = start_web_server(self, status=201, answer=b"created")
        self.assertTrue(web.url.startswith("http://127.0.0.1:"))
        response = await treq.post(web.url + "forms?x=1", data={"title": "Red chair"}, persistent=False,
                                   reactor=reactor)
        self.assertEqual((response.code, await response.content()), (201, b"created"))
        web.status = 503
        response = await treq.post(web.url, data=b"raw", headers={"Content-Type": "text/plain"},
                                   persistent=False, reactor=reactor)
        self.assertEqual(response.code, 503)
        await response.content()
        form, raw = web.requests
        self.assertEqual((form.method, form.path, form.args), ("POST", "/forms?x=1",
                                                              {"x": [b"1"], "title": [b"Red chair"]}))
        self.assertEqual(form.headers["content-type"], "application/x-www-form-urlencoded")
        self.assertEqual((raw.body, raw.args), (b"raw", {}))
