"""Run pytest the way trial runs tests: inside a scratch working directory.

trial's ``TestCase.mktemp()`` returns paths relative to the working directory;
trial itself runs in ``_trial_temp``, and this keeps pytest runs from filling
the checkout with them. Tests find the project's files through ``__file__``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory() -> Iterator[None]:
    previous = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="qptwisted-tests-")
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)
