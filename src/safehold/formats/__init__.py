"""Pure algorithms and byte formats: chunking, keys, sealing, packs, trees, credentials. No I/O."""
