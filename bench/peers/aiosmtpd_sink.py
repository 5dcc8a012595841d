"""An aiosmtpd sink: accepts mail for one domain, keeps nothing.

    python aiosmtpd_sink.py PORT DOMAIN
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, domain: str) -> None:
        self.domain = domain

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.rpartition("@")[2].lower() != self.domain:
            return "550 not relaying to that domain"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        return "250 Message accepted for delivery"


async def main(port: int, domain: str) -> None:
    loop = asyncio.get_running_loop()
    handler = Handler(domain)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.test", ident="aiosmtpd sink"),
        host="127.0.0.1", port=port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
