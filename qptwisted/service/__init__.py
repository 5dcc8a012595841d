"""Running the engine: the listener factory, the Twisted service, ``twistd qpsmtpd``, workers.

``qptwisted`` re-exports :class:`SMTPFactory` and :class:`QPSMTPDService` for embedders.
"""
