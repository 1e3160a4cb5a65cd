"""The ``glip`` command: parsing, printing and exit codes over the library (nothing imports this package).

One module per subcommand family (:mod:`glip.cli.detect`, :mod:`glip.cli.train`, :mod:`glip.cli.eval`,
...), each with ``add_parser(subparsers)`` and ``run(args) -> int``; :mod:`glip.cli.main` builds the
parser and maps library errors to one line and exit code 2. The parser modules import no torch, so
``glip --help`` and ``glip models`` start fast; each ``run`` imports the library it needs.
"""

from glip.cli.main import EXAMPLES, main

__all__ = ["EXAMPLES", "main"]
