"""The subcommands of the ``appendmuch`` command (see :mod:`appendmuch.cli`).

:mod:`.parser` builds the argument parser, one small function per subcommand; the
commands themselves are grouped by what they do: :mod:`.reading` (info, ls, show,
history, within), :mod:`.transfer` (export, dump, restore), :mod:`.maintenance`
(verify, replay) and :mod:`.demo`; :mod:`.common` holds what they share (the user
error, opening the log, output files, tables and JSON).  Package-internal: the
command line is the interface.
"""
