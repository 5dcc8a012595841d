"""What plugins see of the mail: Connection, Transaction, Address, headers and the spool.

Not imported by plugin authors directly: ``qptwisted`` re-exports what is API.
"""
