"""``python -m sinco`` runs the command-line interface."""

from sinco.cli import main

raise SystemExit(main())
