"""The ``raynas`` subcommands, one module each: ``register(subparsers)`` adds its parser, ``cmd_*`` runs it.

A command reads its flags, calls the library (``raynas.runner``, ``raynas.retrain``, ``raynas.report``, ...)
and prints; nothing in the library imports this package. Modules import only what parsing needs at the top
level (no torch, no Ray), so ``raynas methods``, ``bench`` and ``genotype`` never load Ray.
"""

from raynas.commands import (
    bench,
    compare,
    genotype,
    methods,
    rank,
    report,
    resume,
    retrain,
    run,
    search,
    server,
    study,
    sync,
)

#: in the order ``raynas --help`` lists them
COMMANDS = (search, run, server, sync, compare, resume, study, bench, genotype, retrain, rank, report, methods)

__all__ = ["COMMANDS"]
