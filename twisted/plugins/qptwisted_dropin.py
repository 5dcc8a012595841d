"""Registers ``twistd qpsmtpd`` (kept tiny: twistd imports it on every start)."""

from twisted.application.service import ServiceMaker

qpsmtpd = ServiceMaker("qpsmtpd", "qptwisted.service.tap", "qpsmtpd-compatible SMTP server", "qpsmtpd")
