"""A ClamAV signature database for tests: no signature download is possible (or wanted) here."""

from __future__ import annotations

from pathlib import Path

#: the EICAR anti-virus test file, put together here so that no scanner flags this source file
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
#: the name of its signature; ClamAV reports it as ``QPT.Test.EICAR.UNOFFICIAL``
SIGNATURE = "QPT.Test.EICAR"


def signatures(directory: Path) -> Path:
    """A body-signature database (``.ndb``) in ``directory`` that knows only the EICAR test file."""
    database = directory / "test.ndb"
    database.write_text(f"{SIGNATURE}:0:*:{EICAR.hex()}\n")
    return database
