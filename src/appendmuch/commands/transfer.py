"""The commands that move rows in and out of a log: ``export`` (CSV, JSON Lines),
``dump`` and ``restore`` (msgpack dump files).  Package-internal."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import IO, Any

from ..codec import Codec
from ..errors import DecodeError
from ..progress import Progress
from .common import (
    CommandError,
    opened,
    out,
    output_file,
    plural,
    progress_bar,
    refuse_overwriting_db,
    target_of,
)

__all__: list[str] = []


def cmd_export(args: argparse.Namespace) -> int:
    """The ``export`` command (package-internal)."""
    from ..export import write_export

    output = args.output or "-"
    refuse_overwriting_db(args, output)
    with (
        opened(args) as driver,
        output_file(output, binary=False) as fh,
        progress_bar("export", driver) as bar,
    ):
        count = write_export(
            driver,
            fh,
            format=args.format,
            shape=args.shape,
            namespace=args.namespace,
            progress=bar.update,
        )
    if output != "-":
        out(f"exported {plural(count, 'row')} to {output}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    """The ``dump`` command (package-internal)."""
    from ..dumpfile import pack_rows
    from ..inspection import stream_rows

    refuse_overwriting_db(args, args.output)
    count = 0
    with (
        opened(args) as driver,
        output_file(args.output, binary=True) as fh,
        progress_bar("dump", driver) as bar,
    ):
        for chunk in pack_rows(stream_rows(driver, bar.update)):
            fh.write(chunk)
            count += 1
    if args.output != "-":
        out(f"dumped {plural(count, 'row')} to {args.output}")
    return 0


class _CountingReader:
    """A binary file that tells a progress bar how many bytes were read."""

    def __init__(self, fh: IO[bytes], bar: Progress) -> None:
        self._fh = fh
        self._bar = bar
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._done += len(chunk)
        self._bar.update(self._done)
        return chunk


class _CheckingCodec(Codec):
    """Refuses values that do not decode; unknown type ids only when ``strict``."""

    def __init__(self, *, strict: bool) -> None:
        super().__init__()
        self.strict = strict

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        try:
            return super().decode(data)
        except DecodeError:
            if self.strict or (data and self.knows(data[0])) or not data:
                raise
            return None


def cmd_restore(args: argparse.Namespace) -> int:
    """The ``restore`` command (package-internal)."""
    from ..dumpfile import read_dump

    path = args.file
    if path != "-" and not os.path.isfile(path):
        raise CommandError(f"no such file: {path!r}")
    target = target_of(args)
    if path != "-" and not target.is_postgres and not os.path.exists(target.db):
        # check the dump before creating a database for it (a bad dump creates nothing)
        with open(path, "rb") as dump:
            read_dump(dump, codec=_CheckingCodec(strict=args.strict))
    with contextlib.ExitStack() as stack:
        if path == "-":
            fh: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            fh = stack.enter_context(open(path, "rb"))
            total = os.fstat(fh.fileno()).st_size
        driver = stack.enter_context(opened(args, read_only=False))
        bar = stack.enter_context(Progress("restore", total, unit="bytes"))
        count = driver.restore(_CountingReader(fh, bar), codec=_CheckingCodec(strict=args.strict))
    out(f"restored {plural(count, 'row')} into table {target.table} of {target.display}")
    return 0
