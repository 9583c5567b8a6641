"""`python -m attnkit` (also what `torchrun -m attnkit` runs)."""

from attnkit.cli import main

raise SystemExit(main())
