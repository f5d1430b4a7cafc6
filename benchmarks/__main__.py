"""``python -m benchmarks --quick|--full``: run the suite, print the table, write results."""

from .harness import main

raise SystemExit(main())
