"""Small shared helpers: atomic file writes, input validation, git/device facts."""
