"""python -m sdgm.bench.scaling: the command line of the scaling benchmark (sdgm.bench.scaling.cli)."""

from .cli import main

raise SystemExit(main())
