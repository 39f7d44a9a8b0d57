"""No workflow commands from data: under GitHub Actions, ``apb`` stops the runner's command processing for its
whole output.

A runner reads every line a step prints and acts on lines of the form ``::command ...::`` (``::add-mask::``,
``::error::``, ``::stop-commands::`` ...). ``apb`` prints text that comes from files a pull request controls:
state-dict keys, manifest values, record fields. A key named ``"\\n::notice title=x::pwned"`` printed raw would
be a command. So, when ``GITHUB_ACTIONS`` is ``true``, :func:`commands_stopped` prints
``::stop-commands::<token>`` first (a fresh random token no file can know) and ``::<token>::`` last, after
flushing everything printed in between; the runner ignores every command in between. The two lines go to
stderr, which the runner reads for commands like stdout, so that stdout stays exactly the command's output
(``apb validate --format json > file``). Names from files are also printed with ``repr()``, so a newline in
a key stays ``\\n`` on one line: the runner reads the two streams separately, and ``repr()`` keeps data
inert even in the moment between the streams.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import sys
from typing import Iterator, Mapping


@contextlib.contextmanager
def commands_stopped(environ: Mapping[str, str] | None = None) -> Iterator[str | None]:
    """Within the block, workflow commands in anything printed are inert (under GitHub Actions; elsewhere
    nothing is printed). Yields the token, or None outside Actions."""
    if (os.environ if environ is None else environ).get("GITHUB_ACTIONS") != "true":
        yield None
        return
    token = secrets.token_hex(16)
    _flush()
    print(f"::stop-commands::{token}", file=sys.stderr, flush=True)
    try:
        yield token
    finally:
        _flush()
        print(f"::{token}::", file=sys.stderr, flush=True)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
