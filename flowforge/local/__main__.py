"""``python -m flowforge.local``: the same as ``flowforge dev``."""

from flowforge.local.dev import main

raise SystemExit(main())
