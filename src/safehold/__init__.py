"""safehold: an encrypted, deduplicating backup agent and the vault it stores into.

The package is layered (see docs/architecture.md): errors and model, formats, ports, agent and vault, cli.
"""

__version__ = "0.1.0"
