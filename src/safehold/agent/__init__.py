"""The agent: registration, keys, backup, restore and check on the protected machine."""
