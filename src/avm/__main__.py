"""``python -m avm``: the same as the ``avm`` command."""

from avm.cli import main

raise SystemExit(main())
