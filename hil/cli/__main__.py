"""`python -m hil.cli ...` is `hil ...`."""

from hil.cli import main

raise SystemExit(main())
