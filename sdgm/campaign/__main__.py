"""python -m sdgm.campaign run|plan|estimate|pack|import|render|verify: the campaign's command (sdgm.campaign.cli)."""

from .cli import main

raise SystemExit(main())
