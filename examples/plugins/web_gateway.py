# Seed 004 ("Writing Applications with Qpsmtpd"), the SMTP-to-web gateway: 75 lines of Perl.
"""web_gateway: post mail sent to an application's address to a web application.

"SMTP applications": a message from a relay client (an authenticated user)
whose first recipient is the application's address is posted to a web
application as an HTML form: ``title`` (the Subject), ``body`` (the plain
text part) and ``file1``, ``file2`` ... (the attachments, e.g. the photos
taken with a phone). The post runs after DATA, without blocking the server
(``treq``). If the application answers anything but 2xx, or not within
``plugin_timeout``, the client gets a 452, and if it cannot be reached a
451 (the plugin fails closed): either way the client tries again later.
Other mail is not touched. List a queue plugin after it: the message is then delivered
as well, a copy for the sender's records.

Arguments: ``URL ADDRESS``.

config/plugins::

    web_gateway http://127.0.0.1:8080/post post@example.com
"""

from email import message_from_bytes, policy
from email.message import EmailMessage
from io import BytesIO

import treq

from qptwisted import DECLINED, DENYSOFT, LOGINFO, HookAnswer, Plugin, Transaction, arg


class WebGateway(Plugin):
    """Post the messages of one address to a web application."""

    name = "web_gateway"
    url = arg.str(help="the web application's form (it receives an HTTP POST)", positional=True)
    recipient = arg.str(help="the application's mail address", positional=True)

    async def hook_data_post(self, transaction: Transaction) -> HookAnswer:
        first = transaction.recipients[0].address.lower()
        if first != self.recipient.lower() or not transaction.connection.relay_client:
            return DECLINED
        message = await self.defer_to_thread(self.parse, transaction)
        text = message.get_body(("plain",))
        form = {"title": message.get("Subject", ""), "body": text.get_content() if text is not None else ""}
        files = {f"file{number}": (part.get_filename(), part.get_content_type(), BytesIO(part.get_content()))
                 for number, part in enumerate(message.iter_attachments(), 1)}
        response = await treq.post(self.url, data=form, files=files, persistent=False)
        if not 200 <= response.code < 300:
            return DENYSOFT, f"The application did not take it (HTTP {response.code}), try again later"
        self.log(LOGINFO, f"posted {form['title']!r} to {self.url}")
        return DECLINED

    def parse(self, transaction: Transaction) -> EmailMessage:
        """The message as an ``email`` object; reading and parsing take a while, so on the thread pool."""
        return message_from_bytes(transaction.message_bytes(), policy=policy.default)
