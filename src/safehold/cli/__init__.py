"""The `safehold` command: one module per command; only this package writes to the terminal."""
