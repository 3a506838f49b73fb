"""Command-line interface (``ddif ...``), generated from the dataclass configs."""
