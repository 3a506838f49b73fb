"""``python -m ddif.station run|watch ...`` (the same as ``ddif station ...``)."""
from ddif.cli.station import main

raise SystemExit(main())
