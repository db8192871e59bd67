# TEMPORARY STUB (lead developer's smoke test) — to be replaced entirely by the real catalog.
from safehold.errors.spec import ErrorSpec

ENTRIES = tuple(ErrorSpec(i, c, c + ": {reason}", actions=("do something",), hex_id=h, kind=k, exit_code=e) for i, c, h, k, e in [
        (34513, "VaultCredentialsInvalid", False, "error", 1), (100110, "VaultCredentialsWrongVault", False, "error", 1),
        (34506, "PassphraseNotConfigured", False, "error", 1), (34528, "AnotherJobInProgress", False, "error", 4),
        (34600, "SalChecksumStoreInitializationFailed", False, "error", 1),
        (0x80070570, "FileCorruptOrUnreadable", True, "file", 3), (0x80070002, "FileNotFound", True, "file", 3),
        (0x80070003, "PathNotFound", True, "file", 3), (0x80070005, "FileAccessDenied", True, "file", 3),
        (0x8007018b, "FileOffline", True, "file", 3)])
