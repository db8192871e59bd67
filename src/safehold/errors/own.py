"""safehold's own errors: the ones the MARS article does not name, ids 700000–799999.

Grouped by area in blocks of 100; an id, once released, is never reused.
"""

from safehold.errors.spec import ErrorSpec

ENTRIES: tuple[ErrorSpec, ...] = (
    # 7000xx: usage and input
    ErrorSpec(
        700001, "InvalidArgument", "Invalid input: {what}.",
        causes=("A command-line argument or setting has a value safehold cannot use.",),
        actions=("Run the command with --help to see the accepted values, correct the input and try again.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700002, "PathNotReadable", "The path {path} cannot be backed up: {reason}.",
        causes=("A path given on the command line does not exist or cannot be opened.",),
        actions=("Check the path for typing mistakes and that this user may read it.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700003, "InternalError", "safehold hit an unexpected problem.",
        causes=("A defect in safehold or a situation it does not know yet.",),
        actions=("Run the command again with SAFEHOLD_DEBUG=1 to see the full trace, and report it with the "
                 "output of `safehold --version`.",),
    ),
    # 7001xx: registration and keys
    ErrorSpec(
        700101, "NotRegistered", "This machine is not registered with a vault.",
        causes=("No registration exists in the agent folder {home}.",
                "SAFEHOLD_HOME points to another agent folder than the one used at registration."),
        actions=("Register with `safehold register --credentials FILE`, using a file issued by the vault.",
                 "If the machine was registered under another agent folder, set SAFEHOLD_HOME to it."),
    ),
    ErrorSpec(
        700102, "PassphraseTooWeak", "The passphrase is not acceptable: {reason}.",
        causes=("A passphrase must have at least 16 characters, all printable ASCII.",),
        actions=("Choose a longer passphrase of printable ASCII characters, or let safehold make one with "
                 "`--generate-passphrase FILE`.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700103, "WrongPassphrase", "The passphrase does not open this machine's encryption key.",
        causes=("The passphrase differs from the one used when this machine's data was first protected.",
                "The passphrase file was edited or replaced."),
        actions=("Enter the passphrase used at first registration; it is the only way to the data.",
                 "If the passphrase is lost and the machine's data is still on disk, register as a new "
                 "machine with a new passphrase; earlier recovery points stay unreadable without the old one."),
        exit_code=1, http_status=403,
    ),
    ErrorSpec(
        700104, "PassphraseMissing", "No passphrase was given.",
        causes=("The command needs the encryption passphrase and none was found.",),
        actions=("Give --passphrase-file FILE (mode 0600), set SAFEHOLD_PASSPHRASE_FILE, or run in a terminal "
                 "to be asked for it.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700105, "MachineLimitReached", "The vault already holds the most machines it allows ({limit}).",
        causes=("Each vault protects a limited number of machines (default 50).",),
        actions=("Remove machines that are no longer protected from the vault, raise the vault's limit with "
                 "`safehold vault settings VAULT --max-machines N`, or use another vault.",),
        http_status=409,
    ),
    ErrorSpec(
        700106, "SecretFileUnsafe", "The secret file {path} is readable by other users (mode {mode}).",
        causes=("Passphrase and token files must be private to their owner.",),
        actions=("Run `chmod 600 {path}` and try again.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700107, "TokenInvalid", "The vault does not accept this machine's token.",
        causes=("The machine was removed from the vault, or registered again from another agent folder, which "
                "issued a new token.",
                "The token file in the agent folder was changed or replaced."),
        actions=("Register again with a new credentials file: `safehold register --credentials FILE`, with the "
                 "passphrase first used.",),
        exit_code=1, http_status=401,
    ),
    ErrorSpec(
        700108, "AccessDenied", "The vault refused the request: {reason}.",
        causes=("A machine's token only opens that machine's own data.",
                "Administration (credentials, machines, settings) needs the vault's admin token."),
        actions=("Use the agent that registered the machine, or, to restore another machine's data, the "
                 "restore-from-another-machine path with that machine's passphrase.",
                 "For administration, give the admin token file with --admin-token-file (it is in the vault folder, "
                 "admin.token, mode 0600)."),
        exit_code=1, http_status=403,
    ),
    # 7002xx: vault and catalog
    ErrorSpec(
        700201, "VaultNotFound", "No vault was found at {path}.",
        causes=("The folder does not exist or is not a safehold vault.",),
        actions=("Check the path, or create a vault there with `safehold vault init PATH`.",),
        exit_code=2, http_status=404,
    ),
    ErrorSpec(
        700202, "VaultExists", "A vault or other data already exists at {path}.",
        causes=("`vault init` only creates a vault in an empty or new folder.",),
        actions=("Pick a new folder, or use the existing vault.",),
        exit_code=2, http_status=409,
    ),
    ErrorSpec(
        700203, "RecoveryPointNotFound", "No recovery point matches {rp}.",
        causes=("The id is mistyped, ambiguous, or the recovery point has expired.",),
        actions=("List the recovery points with `safehold recovery-points` and use one of the ids shown.",),
        exit_code=2, http_status=404,
    ),
    ErrorSpec(
        700204, "CatalogCorrupt", "The vault catalog cannot be read: {reason}.",
        causes=("The catalog database was damaged or written by an incompatible version.",),
        actions=("Run `safehold check` to see what is affected, and restore the catalog from the vault "
                 "server's database backup.",),
        http_status=500,
    ),
    ErrorSpec(
        700205, "ChunkMissing", "Data {chunk} needed by this recovery point is missing from the vault.",
        causes=("A pack was deleted or the vault catalog lost its index entry.",),
        actions=("Run `safehold check --read-data` to list the damaged recovery points, then back up again "
                 "so that the data is stored anew.",),
        http_status=409,
    ),
    ErrorSpec(
        700206, "CatalogOutdated", "The vault catalog has an older schema ({revision}) than this safehold needs "
        "({head}).",
        causes=("safehold was upgraded and the vault catalog was not migrated yet.",
                "The catalog was made by a safehold version from before catalog schema versions."),
        actions=("Stop the vault servers that use this catalog, run `safehold vault migrate VAULT` once (VAULT is "
                 "the vault folder), then start them again.",),
        http_status=503,
    ),
    ErrorSpec(
        700207, "CatalogUnavailable", "The vault's catalog database cannot be reached: {reason}.",
        causes=("The PostgreSQL server is down, restarting, or refuses the vault's connections.",
                "The database's address, user or password in the vault's settings no longer fits."),
        actions=("Check that PostgreSQL runs and accepts connections from the vault's host (`pg_isready -h HOST`).",
                 "Check the catalog URL in VAULT/vault.json and the password in ~/.pgpass or PGPASSFILE.",
                 "Agents retry on their own; a backup that stopped resumes without sending its data again."),
        http_status=503, retryable=True,
    ),
    # 7003xx: integrity
    ErrorSpec(
        700301, "IntegrityError", "Stored data failed verification: {what}.",
        causes=("Bytes in the vault were changed after they were written: disk fault, tampering or a bug.",),
        actions=("Run `safehold check --read-data` to list every damaged recovery point.",
                 "Back up again so that the damaged data is stored anew, then restore from a sound point."),
        http_status=500,
    ),
    ErrorSpec(
        700302, "CheckFailed", "The check found {count} problem(s).",
        causes=("Data or metadata in the vault is damaged or missing.",),
        actions=("Read the problems listed above; each names the recovery points it affects.",
                 "Run `safehold check --read-data --repair` to drop the damaged data from the index, then back "
                 "up again: data still on this machine is stored anew and the affected points heal."),
        exit_code=1,
    ),
    # 7004xx: jobs, backup and restore
    ErrorSpec(
        700401, "FileChangedWhileRead", "The file changed while it was being read.",
        causes=("Another program wrote to the file during the backup.",),
        actions=("The previous version stays in earlier recovery points; the next backup takes the file again. "
                 "Use a snapshot hook for files that are always in use.",),
        exit_code=3, kind="file", hex_id=True,
    ),
    ErrorSpec(
        700402, "FileReadError", "The file could not be read: {reason}.",
        causes=("The operating system refused or failed the read for a reason safehold has no code for.",),
        actions=("Read the reason, fix the cause, and run the backup again.",),
        exit_code=3, kind="file", hex_id=True,
    ),
    ErrorSpec(
        700403, "RestoreWriteFailed", "An item could not be restored: {reason}.",
        causes=("The target file system refused the operation (space, permissions, unsupported type).",),
        actions=("Check free space and permissions at the target, then restore the listed items again.",),
        exit_code=3, kind="file", hex_id=True,
    ),
    ErrorSpec(
        700404, "RestoreVerifyFailed", "The item was not restored because its stored data failed verification.",
        causes=("Stored data of this item was changed after it was written.",),
        actions=("Run `safehold check --read-data`, then restore this item from another recovery point.",),
        exit_code=1, kind="file", hex_id=True,
    ),
    ErrorSpec(
        700407, "PathNotInRecoveryPoint", "The path is not in this recovery point.",
        causes=("The path was mistyped, or it was not part of the backup that made this recovery point.",),
        actions=("Give paths as they were backed up, absolute (for example /home/ann/docs); list the recovery "
                 "points with `safehold recovery-points` to see which folders each one holds.",),
        exit_code=3, kind="file", hex_id=True,
    ),
    ErrorSpec(
        700405, "TargetNotEmpty", "The restore target {path} already holds {name}.",
        causes=("Restore does not overwrite what is already at the target.",),
        actions=("Restore into an empty folder, or remove the existing item first.",),
        exit_code=2, http_status=409,
    ),
    ErrorSpec(
        700406, "Interrupted", "The job was interrupted.",
        causes=("The job received SIGINT or SIGTERM.",),
        actions=("Run the job again: what was already stored in the vault is not sent again.",),
        exit_code=130,
    ),
    # 7005xx: the vault server and its protocol
    ErrorSpec(
        700501, "VaultProtocolError", "The vault at {url} answered in a way this agent does not understand.",
        causes=("Agent and vault speak different versions of the protocol.",
                "Something between them (a proxy or load balancer) changed or cut the answer."),
        actions=("Compare `safehold --version` with the vault's version (`safehold doctor` shows both) and "
                 "update the older side.",
                 "If a proxy or load balancer sits in front of the vault, let it pass requests and answers unchanged "
                 "(bodies up to 256 MiB, no buffering limits below that)."),
        http_status=502,
    ),
    ErrorSpec(
        700502, "ServerStartFailed", "The vault server could not start: {reason}.",
        causes=("The address is in use or not allowed, or the TLS certificate or key cannot be read.",),
        actions=("Pick a free address with --listen HOST:PORT, and check the files under the vault's tls folder "
                 "(or the ones given with --tls-cert/--tls-key).",),
        exit_code=2,
    ),
    # 7006xx: policies, schedules and job history
    ErrorSpec(
        700601, "PolicyInvalid", "The backup policy is not valid: {reason}.",
        causes=("A policy setting is outside the allowed values, or the stored policy file was damaged.",),
        actions=("Correct the setting named in the message with `safehold policy set` (see "
                 "`safehold policy set --help` for the allowed ranges), then check it with `safehold policy show`.",),
        exit_code=2, http_status=400,
    ),
    ErrorSpec(
        700602, "PolicyNotSet", "This machine has no backup policy yet.",
        causes=("Scheduled backups and `safehold backup` without paths follow the policy, and none was set.",),
        actions=("Set one with `safehold policy set --include /home --daily --at 21:00 --keep-daily 30`, or give "
                 "the folders to back up on the command line.",),
        exit_code=2, http_status=404,
    ),
    ErrorSpec(
        700603, "JobNotFound", "No job matches {job}.",
        causes=("The job id is mistyped or ambiguous, or the job ran on another machine.",),
        actions=("List the jobs with `safehold jobs` and use one of the ids shown.",),
        exit_code=2, http_status=404,
    ),
    ErrorSpec(
        700604, "AgentDaemonAlreadyRunning", "The agent daemon already runs for this agent folder (process {pid}).",
        causes=("`safehold agent run` was started while the daemon (often the systemd unit) was running.",),
        actions=("Use the running daemon; see it with `systemctl status safehold-agent.service`.",
                 "To run it in a terminal instead, stop the unit first with "
                 "`systemctl stop safehold-agent.service`."),
        exit_code=4, http_status=409,
    ),
    # 7007xx: retention and vault housekeeping
    ErrorSpec(
        700701, "HousekeepingRunning", "Housekeeping is already running on this vault.",
        causes=("Another `safehold vault housekeeping`, or a vault server's scheduled housekeeping, is working on "
                "the same catalog; only one runs at a time.",),
        actions=("Wait until it ends and try again; a vault server runs housekeeping by itself every "
                 "--housekeeping-interval.",),
        exit_code=75, http_status=409, retryable=True,
    ),
    # 7008xx: mounting recovery points (Instant Restore); MountFailed, FuseUnavailable and MountStale are the
    # article's 34540-34543
    ErrorSpec(
        700802, "MountPointUnusable", "Nothing can be mounted at {path}: {reason}.",
        causes=("The mount point must be an existing, empty folder with nothing mounted on it.",),
        actions=("Create an empty folder (`mkdir -p PATH`) and give it as the mount point.",
                 "If a recovery point is still mounted there, unmount it with `safehold unmount PATH`."),
        exit_code=2,
    ),
    ErrorSpec(
        700804, "NotMounted", "No recovery point of this machine is mounted at {path}.",
        causes=("The path was mistyped, or the mount ended already (unmounted, or its idle timeout passed).",),
        actions=("See what is mounted with `findmnt -t fuse.safehold`.",),
        exit_code=2,
    ),
    ErrorSpec(
        700805, "UnmountFailed", "{path} could not be unmounted: {reason}.",
        causes=("A program still has files open or its working folder inside the mount.",),
        actions=("Close the programs using the mount (`fuser -vm PATH` names them) and unmount again.",
                 "Or detach it now with `safehold unmount --lazy PATH`; it goes once no one uses it."),
    ),
)
