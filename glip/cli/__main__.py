"""``python -m glip.cli ...`` (and ``torchrun ... -m glip.cli ...``): the ``glip`` command."""

import sys

from glip.cli.main import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
