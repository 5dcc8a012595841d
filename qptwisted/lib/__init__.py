"""Helpers for plugins, one module each; no plugin imports another plugin, they share these.

- :mod:`qptwisted.lib.policy`: ``PolicyPlugin`` (reject / reject_type / naughty / karma / immunity)
- :mod:`qptwisted.lib.dns`: the engine's resolver and its errors
- :mod:`qptwisted.lib.dmarc`: organizational domains (Public Suffix List), DMARC records, alignment
- :mod:`qptwisted.lib.ipmatch`: IP addresses, networks and prefixes
- :mod:`qptwisted.lib.store`: key-value stores (SQLite, Redis) that prune themselves
- :mod:`qptwisted.lib.smtpclient`: an SMTP/LMTP client for queue plugins
- :mod:`qptwisted.lib.maildir`: durable Maildir delivery
- :mod:`qptwisted.lib.sasl`: CRAM-MD5 and the twisted.cred bridge for auth plugins
- :mod:`qptwisted.lib.tls`: certificates and server contexts
"""
