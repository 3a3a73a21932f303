"""The ``codecnn`` command line: thin commands over the library (each docstring is its ``--help``).

One click group (:mod:`.group`) and the commands by stage: :mod:`.dataset`, :mod:`.training`,
:mod:`.evaluation`, :mod:`.export`. Each command parses its options and calls the library.
"""

from codecnn.cli import dataset, evaluation, training, zoo  # noqa: F401  (they register their commands)
from codecnn.cli.export import export
from codecnn.cli.group import CodecnnGroup, UserError, cli, main

__all__ = ["CodecnnGroup", "UserError", "cli", "export", "main"]
