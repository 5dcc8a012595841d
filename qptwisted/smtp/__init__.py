"""The wire and the state machine: the protocol, the session, the message receiver, SASL.

Internal: plugins never touch these; they act through the connection's control interface.
"""
