"""The vault: stores sealed packs it cannot read, keeps the machine registry and the recovery-point catalog."""
