"""`python -m medcite ...` is the same as the `medcite` console script."""

from medcite.cli import main

raise SystemExit(main())
