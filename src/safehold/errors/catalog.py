"""Errors, per-file codes and checks taken from the MARS agent troubleshooting article, told for safehold on Linux.

Ids and codes are the article's where it gives them, otherwise 34506-34699; entries only, no logic.
"""

from safehold.errors.spec import ErrorSpec

ENTRIES: tuple[ErrorSpec, ...] = (
    # --- Basic troubleshooting: the checks to run before anything else
    ErrorSpec(
        34630, "AgentOutdated", "This safehold agent is older than the vault expects.",
        causes=("The agent has not been upgraded since the vault was.",
                "The problem at hand is fixed only in a newer release of the agent."),
        actions=("Compare the agent's version with the vault's in the output of `safehold doctor`.",
                 "Upgrade safehold with the tool it was installed with (the distribution's package manager, or "
                 "`pip install --upgrade safehold` in its virtual environment), then restart "
                 "`safehold-agent.service`.",
                 "Run the failed operation again once the upgrade is done."),
        http_status=426,
    ),
    ErrorSpec(
        34631, "AgentDaemonNotRunning", "The safehold agent daemon is not running.",
        causes=("`safehold-agent.service` is stopped or failed, or was never enabled.",
                "The daemon runs as a user service and systemd stopped it when that user logged out.",
                "The daemon exited after an error it could not get past."),
        actions=("See its state and last log lines with `systemctl status safehold-agent.service` and "
                 "`journalctl -u safehold-agent.service`.",
                 "Start it now and at every boot with `systemctl enable --now safehold-agent.service`.",
                 "For a per-user daemon, keep it alive after logout with `loginctl enable-linger USER`.",
                 "To watch its errors directly, stop the unit and run `safehold agent run` in a terminal."),
        http_status=503,
    ),
    ErrorSpec(
        34632, "RuntimeRequirementMissing", "A component safehold needs is missing or too old on this machine.",
        causes=("The Python interpreter is older than 3.11.",
                "A system library safehold loads, such as libfuse3 for mounts or OpenSSL for TLS, is missing or "
                "outdated.",
                "The operating system has gone without updates for a long time."),
        actions=("Run `safehold doctor`; it names each component that is missing or too old.",
                 "Install the pending operating system updates with the distribution's package manager.",
                 "Install Python 3.11 or newer and reinstall safehold with it."),
    ),
    ErrorSpec(
        34633, "UnsupportedFileSystem", "This item lies on a file system, or has attributes, that safehold does not "
        "back up.",
        causes=("The path is on a virtual file system such as /proc, /sys, /dev or a cgroup mount, which holds no "
                "user data.",
                "The file system refuses to report the item's extended attributes or ACLs."),
        actions=("Exclude the path from the backup policy (or with `safehold backup --exclude PATTERN`) so later "
                 "jobs stop reporting it.",
                 "Protect the data on the volume where it really lives rather than through the virtual mount."),
        exit_code=3, kind="file",
    ),
    ErrorSpec(
        34634, "ClockSkew", "The clock or time zone of this machine looks wrong.",
        causes=("The system clock is several minutes away from the vault's clock.",
                "The configured time zone is not the one the machine is in, so schedules fire at unexpected hours.",
                "No time synchronization service (systemd-timesyncd, chrony or ntpd) is running."),
        actions=("Check the clock, the time zone and the synchronization state with `timedatectl`.",
                 "Set the right zone with `timedatectl set-timezone ZONE` and turn on synchronization with "
                 "`timedatectl set-ntp true`.",
                 "Restart `safehold-agent.service` afterwards so its scheduler works from the corrected time."),
    ),
    ErrorSpec(
        34635, "MachineAlreadyInVault", "The vault already holds a machine with this identity.",
        causes=("The agent folder was deleted or safehold was reinstalled, while the vault still lists the machine "
                "from before.",
                "This machine is a clone of a registered machine and shares its machine id and host name."),
        actions=("To carry on with the old machine's backups, put its agent folder back and register with the "
                 "passphrase first used for it.",
                 "Otherwise remove the old machine from the vault (a security PIN from `safehold vault pin` is "
                 "needed) and register again with `safehold register --credentials FILE`.",
                 "For a clone, give it a new machine id (empty /etc/machine-id, then run "
                 "`systemd-machine-id-setup`) and its own host name before registering."),
        http_status=409,
    ),
    ErrorSpec(
        34636, "OfflineSeedIncompatible", "The offline seed cannot be imported by this vault.",
        causes=("The seed was exported by a safehold release whose seed format this vault cannot read.",
                "The export was interrupted, so the seed folder or disk is incomplete."),
        actions=("Before an offline backup, run matching safehold releases on the exporting machine and at the "
                 "vault; `safehold doctor` shows both versions.",
                 "Export the first backup again to an empty folder or disk and let the export finish before "
                 "shipping it."),
        http_status=400,
    ),
    # --- Invalid vault credentials, and the checks listed with it
    ErrorSpec(
        34513, "VaultCredentialsInvalid", "The vault credentials file cannot be used: {reason}.",
        causes=("The file is damaged, does not end in `.vaultcredentials`, or was not issued by this vault.",
                "The file is no longer valid: it is past its expiry (10 days after issue by default), a newer file "
                "has been issued for the vault since, or it was already used once to register a machine.",
                "The vault could not be reached to accept the file, because the machine has no route to it or a "
                "firewall or proxy stands in the way.",
                "Registration could not complete: security software blocks the cache folder, or the vault already "
                "holds as many machines as it allows (50 by default)."),
        actions=("Issue a fresh file with `safehold vault credentials VAULT`, which also revokes every older file, "
                 "and copy it to the machine without changing it.",
                 "Register within the file's validity with `safehold register --credentials FILE`; a machine that "
                 "is already registered takes the new file the same way.",
                 "Run `safehold doctor` to test the way to the vault; if a proxy is needed, set it with "
                 "`safehold settings` or HTTPS_PROXY, and let the vault's host and port through the firewall.",
                 "Exclude the cache folder (default `~/.local/share/safehold/cache`, or `/var/lib/safehold/cache` "
                 "for root) from on-access scanners and allow it in any SELinux or AppArmor policy.",
                 "If the vault is full, remove machines it no longer protects or raise the limit with "
                 "`safehold vault settings VAULT --max-machines N`."),
        http_status=400,
    ),
    ErrorSpec(
        34637, "TempFolderFull", "The temporary folder has no room left.",
        causes=("The file system holding TMPDIR (usually /tmp) has run out of space or of inodes.",
                "Tens of thousands of stale temporary files have piled up there."),
        actions=("Check space and inodes with `df -h /tmp` and `df -i /tmp`.",
                 "Delete old temporary files that no program uses any more, for example with "
                 "`systemd-tmpfiles --clean`.",
                 "Point TMPDIR for safehold and for `safehold-agent.service` to a folder with room."),
        http_status=507,
    ),
    ErrorSpec(
        34638, "VaultCertificateUntrusted", "The vault's TLS certificate is not the one this agent trusts.",
        causes=("The vault's certificate changed after the credentials file was issued, so the fingerprint no "
                "longer matches.",
                "A proxy that inspects HTTPS puts its own certificate in place of the vault's.",
                "The system's CA certificates are out of date."),
        actions=("Issue a new credentials file with `safehold vault credentials VAULT` and register again with "
                 "`safehold register --credentials FILE`, so the agent learns the current fingerprint.",
                 "Exempt the vault's host from HTTPS inspection on the proxy.",
                 "Update the distribution's CA certificates package."),
        http_status=502,
    ),
    ErrorSpec(
        34639, "ProxySettingsInvalid", "The proxy settings the agent uses do not fit this network.",
        causes=("A proxy is configured, but the network has none or the vault is reached directly.",
                "The proxy's host, port, user name or password is wrong.",
                "The daemon sees other settings than your shell: systemd units do not inherit HTTPS_PROXY from a "
                "login session."),
        actions=("Show the proxy the agent uses with `safehold settings` and compare it with what the network "
                 "needs.",
                 "Remove a proxy that should not be used, or correct its host, port and credentials.",
                 "Give the daemon the same settings, through `safehold settings` or an Environment= line added with "
                 "`systemctl edit safehold-agent.service`.",
                 "Confirm with `safehold doctor`, which tests the proxy the way the daemon uses it."),
    ),
    # --- Vault credentials file could not be issued or downloaded
    ErrorSpec(
        403, "VaultCredentialsDownloadFailed", "The vault could not issue a credentials file.",
        causes=("The account asking for the file lacks the vault role that may issue credentials and register "
                "machines.",
                "The vault is disabled or read-only, or it already holds as many machines as it allows (50 by "
                "default).",
                "A firewall, proxy or browser policy blocks the download from the web console."),
        actions=("Ask a vault administrator for the role that issues credentials, then try again.",
                 "Issue the file with `safehold vault credentials VAULT` instead of the web console, or use another "
                 "browser after clearing the console's cached data and cookies.",
                 "Check that the vault is enabled and writable, and compare its machine count with its limit in "
                 "`safehold vault settings VAULT`.",
                 "Make sure no firewall or proxy rule blocks the console's download address."),
        http_status=403,
    ),
    # --- The agent could not connect to the vault
    ErrorSpec(
        100050, "VaultUnreachable", "The agent could not connect to the vault at {url}.",
        causes=("The vault's host name does not resolve, or no TCP connection reaches its port.",
                "The TLS handshake fails, for example because something between agent and vault intercepts HTTPS.",
                "A proxy in the path refuses the request or asks for credentials (HTTP 407 Proxy Authentication "
                "Required).",
                "A firewall or security software on this machine blocks the agent's outgoing connections."),
        actions=("Run `safehold doctor`; it tries DNS, TCP, TLS and HTTP to the vault in turn and names the step "
                 "that fails.",
                 "If a proxy is needed, give its address, port and user with `safehold settings`, or set HTTPS_PROXY "
                 "for the agent and its systemd unit; if none should be used, remove the stale setting.",
                 "On HTTP 407, check the proxy user name and password, and ask the proxy's owners to allow the "
                 "vault's host for that account.",
                 "Open the vault's host and port (443 for HTTPS) in every firewall; over a VPN or private link, make "
                 "sure the vault's name resolves to its private address from this machine.",
                 "Let the safehold program (its Python interpreter) through security software that filters "
                 "outgoing traffic, then try again."),
        http_status=503, retryable=True,
        variants=(
            ("proxy-auth", (
                "The proxy asked for credentials (HTTP 407): set the proxy user with `safehold settings --proxy-user "
                "NAME --proxy-password-file FILE`, or correct the user name and password already set.",
                "Check with the proxy's owners that this account may open HTTPS tunnels (CONNECT) to the vault's "
                "host and port.",
                "If the daemon runs the backups, make sure it uses the same proxy settings: `safehold settings` shows "
                "them, and HTTPS_PROXY in a login shell does not reach a systemd unit.",
                "Run `safehold doctor` to test the proxy and its authentication the way the agent uses them.")),
            ("proxy", (
                "The proxy itself could not be reached or refused the tunnel: check its host and port with "
                "`safehold settings`, or the HTTPS_PROXY and NO_PROXY variables of the agent's environment.",
                "If this network reaches the vault directly, remove the proxy with `safehold settings --no-proxy`.",
                "Ask the proxy's owners to allow CONNECT to the vault's host and port.",
                "Run `safehold doctor` to see which step fails.")),
        ),
    ),
    # --- Credentials file from another vault
    ErrorSpec(
        100110, "VaultCredentialsWrongVault",
        "This credentials file belongs to another vault than the one this machine is registered with.",
        causes=("The file was issued by a vault other than the one in this machine's registration.",
                "To restore another machine's data here, both machines must be registered with the same vault, "
                "and they are not."),
        actions=("Issue a file from the vault this machine is registered with (`safehold doctor` shows its name) "
                 "and run `safehold register --credentials FILE` with it.",
                 "To move this machine to another vault on purpose, unregister it first and then register with a "
                 "file from the new vault.",
                 "To restore another machine's data here, register this machine with the vault that holds it."),
        http_status=409,
    ),
    # --- Completed with warnings: the job summary, per-file codes in the failed-file list, and inconsistency
    ErrorSpec(
        34640, "BackupCompletedWithWarnings", "The backup completed with warnings: some items were skipped.",
        causes=("Some items have types or attributes safehold does not back up, or lie on unsupported file "
                "systems.",
                "The file system reported errors for some items.",
                "Another program, such as a security scanner, held or locked files so they could not be read."),
        actions=("List the skipped items with their codes using `safehold jobs show ID --failed-files`; the same "
                 "list is kept in the `logs/` folder of the cache folder.",
                 "Follow the recommended action given with each code in that list.",
                 "Exclude items that are unsupported, gone or not needed from the backup policy so that later jobs "
                 "complete cleanly."),
        exit_code=3,
    ),
    ErrorSpec(
        0x80070570, "FileCorruptOrUnreadable", "The file or folder is damaged and cannot be read.",
        causes=("The file system holding it has errors, or the disk returned read errors.",),
        actions=("Check the source file system with `fsck` (unmounted, or at the next boot) and look for disk "
                 "errors with `dmesg` or `smartctl`, then back up again.",
                 "Restore a good copy of the file from an earlier recovery point if the damage cannot be repaired."),
        exit_code=3, hex_id=True, kind="file",
    ),
    ErrorSpec(
        0x80070002, "FileNotFound", "The file could not be found.",
        causes=("The file was deleted or renamed between the folder scan and the read.",
                "The cache folder is full, or the volume it is on is no longer mounted.",
                "Security software removed or hid the file while the backup ran."),
        actions=("If the file was removed on purpose nothing is needed; exclude it from the policy if it comes and "
                 "goes often.",
                 "Check with `safehold doctor` that the cache folder's volume is mounted and has free space.",
                 "Exclude the safehold program and the cache folder from security software scanning."),
        exit_code=3, hex_id=True, kind="file",
    ),
    ErrorSpec(
        0x80070003, "PathNotFound", "The folder, or a part of its path, could not be found.",
        causes=("A folder in the path was deleted, renamed or unmounted during the backup.",
                "The cache folder is full, or the volume it is on is no longer mounted.",
                "Security software blocked the path while the backup ran."),
        actions=("If the folder was removed or unmounted on purpose, exclude it from the policy or mount it before "
                 "the next backup.",
                 "Check with `safehold doctor` that the cache folder's volume is mounted and has free space.",
                 "Exclude the safehold program and the cache folder from security software scanning."),
        exit_code=3, hex_id=True, kind="file",
    ),
    ErrorSpec(
        0x80070005, "FileAccessDenied", "Access to the file was denied.",
        causes=("The agent's user may not read the file, or may not enter a folder above it.",
                "Security software or an SELinux or AppArmor policy blocks the read."),
        actions=("Run the backup as a user that can read the file (the system unit runs as root), or grant read "
                 "access to the agent's user.",
                 "Look for denials with `ausearch -m avc` or `journalctl -k`, and allow safehold in the security "
                 "software or policy."),
        exit_code=3, hex_id=True, kind="file",
    ),
    ErrorSpec(
        0x8007018B, "FileOffline", "The file is offline: only a placeholder of it is on this machine.",
        causes=("The file lives in a cloud or network store, and what is on disk is a placeholder served by FUSE "
                "or a network file system.",
                "The network or remote service behind the file is not available."),
        actions=("Exclude cloud-synchronized folders and network mounts from the policy, or make their files "
                 "available locally before the backup.",
                 "Back up that data on the machine or service where it is actually stored.",
                 "If the mount should be online, reconnect it and run the backup again."),
        exit_code=3, hex_id=True, kind="file",
    ),
    ErrorSpec(
        34641, "FileLocked", "The file is locked by another program.",
        causes=("A program holds a lock or lease on the file that makes reads fail, as can happen on SMB/CIFS and "
                "some FUSE mounts.",
                "A security scanner keeps the file open for itself while it checks it."),
        actions=("Back the file up through a snapshot hook, or at a time when the program that locks it is "
                 "stopped.",
                 "Find the holder with `lsof FILE` or `fuser -v FILE`.",
                 "Exclude the file from on-access scanning."),
        exit_code=3, kind="file",
    ),
    ErrorSpec(
        34620, "CriticalInconsistency",
        "A critical inconsistency was found in a protected folder, so its changes could not be backed up.",
        causes=("A top-level protected folder was deleted and created again under the same name since the last "
                "backup.",
                "Another mount or file system was put in place of the folder at the same path."),
        actions=("Delete and re-create folders inside a protected folder, never the protected top-level folder "
                 "itself.",
                 "If the folder really had to be replaced, remove it from the backup policy and add it again, so "
                 "the next backup takes it as new.",
                 "See which folder is concerned with `safehold jobs show ID --failed-files`."),
        exit_code=3, kind="file",
    ),
    # --- Encryption key, activation and passphrase
    ErrorSpec(
        34520, "EncryptionKeySetFailed",
        "The encryption key for secure backups could not be set up, so registration did not finish; the passphrase "
        "was kept in the passphrase file.",
        causes=("This machine is already registered with another vault.",
                "The passphrase was damaged while registration set it up, for example because the passphrase file "
                "changed or was cut short at that moment."),
        actions=("Unregister the machine from the vault, then register again with "
                 "`safehold register --credentials FILE` and a new passphrase.",
                 "Keep the new passphrase file at mode 0600 and a copy away from this machine; nothing else opens "
                 "the backups.",
                 "If the machine belongs with another vault, register it with a credentials file from that vault."),
    ),
    ErrorSpec(
        0x1FC07, "ActivationFailed", "Activation did not finish because of an internal failure; try again later.",
        causes=("The volume holding the cache folder does not have enough free space.",
                "The cache folder was moved by hand, or only partly, and safehold still points at the old place.",
                "The wrapped key file `key.wrapped` is missing from the cache folder."),
        actions=("Upgrade safehold to the latest release.",
                 "Keep the cache folder on a local volume whose free space is at least 5-10 % of the data you "
                 "protect.",
                 "To move the cache folder, stop `safehold-agent.service`, move the whole folder, record the new "
                 "place with `safehold settings`, and start the service again.",
                 "Check that `key.wrapped` is in the cache folder, and bring it back with `safehold key restore` if "
                 "it is not.",
                 "If the failure stays, run `safehold doctor` and report the problem with its output."),
        hex_id=True,
    ),
    ErrorSpec(
        34506, "PassphraseNotConfigured", "The encryption passphrase stored on this machine is not set up correctly.",
        causes=("The wrapped key file `key.wrapped` in the cache folder is missing or damaged.",
                "The cache folder was moved or replaced, so the key file found there belongs to another "
                "registration.",
                "The volume holding the cache folder ran out of space while the key file was written."),
        actions=("Fetch the vault's copy of the wrapped key with `safehold key restore`; it opens only with the "
                 "original passphrase.",
                 "Or register again with `safehold register --credentials FILE` and the same passphrase as before, "
                 "which writes a new key file.",
                 "If the cache folder was moved, move all of it and record the new place with `safehold settings`.",
                 "Free space on the cache folder's volume (5-10 % of the protected data), then run `safehold doctor` "
                 "to confirm the key opens."),
    ),
    # --- Backups do not run on schedule
    ErrorSpec(
        34610, "ScheduleNotRunning", "Scheduled backups are not running, although manual backups work.",
        causes=("The agent daemon is not running, or `safehold-agent.service` is not enabled at boot.",
                "The schedule is turned off in the backup policy, or another backup tool's schedule collides with "
                "it.",
                "The unit cannot run safehold: its User= lacks rights, its ExecStart points to a moved or removed "
                "installation, or a noexec mount or security policy stops the program.",
                "The clock or time zone is wrong, so the schedule fires at other hours than intended."),
        actions=("Enable and start the daemon with `systemctl enable --now safehold-agent.service`, and read the "
                 "schedule findings of `safehold doctor`.",
                 "Check that the schedule in the backup policy is enabled and does not overlap another backup "
                 "tool's runs.",
                 "Read `journalctl -u safehold-agent.service`, or run `safehold agent run` in a terminal as the "
                 "unit's user, to see why jobs do not start.",
                 "Check the time zone with `timedatectl`.",
                 "Restart `safehold-agent.service` after each change so that it takes effect."),
    ),
    ErrorSpec(
        34645, "AgentInstallationDamaged", "Files of the safehold installation are missing or damaged.",
        causes=("Part of the installation was removed or changed, for example by a half-done upgrade or a clean-up "
                "tool.",
                "The Python virtual environment safehold runs from was moved, so its paths lead nowhere."),
        actions=("Reinstall safehold with the tool first used, for example `pip install --force-reinstall "
                 "safehold` inside its virtual environment, or the distribution's package manager.",
                 "Check that the ExecStart line of `safehold-agent.service` names the installed `safehold` "
                 "program, then run `systemctl daemon-reload`.",
                 "Restart `safehold-agent.service` and confirm with `safehold doctor`."),
    ),
    # --- Machine renamed (resource not provisioned)
    ErrorSpec(
        230006, "ServerRenamed",
        "This machine no longer matches its registration in the vault (resource not provisioned).",
        causes=("The host name was changed after the machine was registered.",
                "The machine id in /etc/machine-id changed, for example after a reinstall or a clone."),
        actions=("Change the host name back to the registered one with `hostnamectl set-hostname NAME`; "
                 "`safehold doctor` shows the registered name.",
                 "Or keep the new name and register again with a new credentials file: "
                 "`safehold register --credentials FILE` with the passphrase first used records the new name; the "
                 "machine keeps its id, its key and its recovery points.",
                 "If the machine was reinstalled or cloned and its agent folder is gone, register it as a new "
                 "machine; the old machine's recovery points stay in the vault and can be restored from any machine "
                 "registered with the same vault, using the old passphrase."),
        http_status=409,
    ),
    # --- Another job in progress
    ErrorSpec(
        34528, "AnotherJobInProgress", "The job was not started because another job is running on this machine.",
        causes=("A backup, restore or mount job already holds this machine's job lock.",
                "The schedule started a job while a manual run was going on, or the other way round.",
                "Two daemons run for the same machine, for example a system unit and a user unit, or a cron entry "
                "next to `safehold-agent.service`."),
        actions=("See what is running with `safehold jobs`, and wait for it to end or cancel it.",
                 "Start backups from one place only: the daemon's schedule or your own runs, not both at once.",
                 "Keep one daemon: compare `systemctl status safehold-agent.service` with "
                 "`systemctl --user status safehold-agent.service`, disable the extra one, and remove cron entries "
                 "that call safehold."),
        exit_code=4, http_status=409,
    ),
    # --- Restore problems: mounting recovery points (Instant Restore)
    ErrorSpec(
        34540, "MountFailed", "The recovery point could not be mounted.",
        causes=("The mount did not become ready within a few minutes, for example because the vault answers "
                "slowly.",
                "The mount point does not exist, is not empty, or is already in use.",
                "FUSE refused the mount, or the agent is an old release with a known mount problem."),
        actions=("If the mount has hung for several minutes, stop it with Ctrl+C or `fusermount3 -u MOUNTPOINT`.",
                 "Upgrade safehold to the latest release and check the machine with `safehold doctor`.",
                 "Mount again on an empty folder that you own.",
                 "If it still fails, restart the machine, or restore the recovery point from another machine "
                 "registered with the same vault."),
    ),
    ErrorSpec(
        34541, "MountExpired", "The mounted recovery point was unmounted after it stayed idle.",
        causes=("Nothing used the mount for the idle timeout (6 hours by default), so safehold closed it.",
                "The process serving the mount ended, for example when `safehold-agent.service` restarted."),
        actions=("Mount the recovery point again with `safehold mount` and copy what you need.",
                 "For long copies, keep the copy running so the mount never goes idle, or choose a longer idle "
                 "timeout when mounting."),
        http_status=410,
    ),
    ErrorSpec(
        34542, "FuseUnavailable", "FUSE is not available, so recovery points cannot be mounted.",
        causes=("The fuse kernel module is not loaded, so /dev/fuse does not exist.",
                "The fuse3 package, which provides `fusermount3`, is not installed.",
                "The user may not open /dev/fuse, or safehold runs in a container started without /dev/fuse."),
        actions=("Load the module with `modprobe fuse` and check that /dev/fuse exists.",
                 "Install the distribution's fuse3 package.",
                 "Give the user access to /dev/fuse, or start the container with the FUSE device and the capability "
                 "it needs.",
                 "Or restore with `safehold restore`, which needs no FUSE, instead of mounting."),
        http_status=501,
    ),
    ErrorSpec(
        34543, "MountStale", "An earlier mount of a recovery point was left behind and no longer answers.",
        causes=("The process serving an earlier mount ended without unmounting, so the mount point reports "
                "'Transport endpoint is not connected'.",),
        actions=("Release it with `fusermount3 -u MOUNTPOINT` (add -z if it is busy), then mount again.",
                 "If the mount point cannot be released, restart the machine."),
    ),
    # --- Cache folder problems, snapshot space, and the common Sal* errors
    ErrorSpec(
        34600, "SalChecksumStoreInitializationFailed", "The agent could not open the checksum store in the cache "
        "folder.",
        causes=("Another process or security software holds or locks files in the cache folder.",
                "The cache folder is not valid, or the agent's user cannot reach it.",
                "The checksum store is damaged; safehold then rebuilds it from the last recovery point, and the next "
                "backup reads every file once."),
        actions=("Find processes holding the cache folder with `lsof +D CACHE` or `fuser -vm CACHE`, and stop them "
                 "or exclude the folder from their scans.",
                 "Check with `safehold doctor` that the cache folder is local, writable and valid.",
                 "Restart `safehold-agent.service` and run the backup again."),
    ),
    ErrorSpec(
        34601, "SalVhdInitializationError", "The agent could not initialize the metadata store in the cache folder.",
        causes=("Another process or security software holds or locks files in the cache folder.",
                "The cache folder is not valid, or the agent's user cannot write to it."),
        actions=("Find processes holding the cache folder with `lsof +D CACHE` or `fuser -vm CACHE`, and stop them "
                 "or exclude the folder from their scans.",
                 "Check with `safehold doctor` that the cache folder is valid and writable.",
                 "Restart `safehold-agent.service` and try again."),
    ),
    ErrorSpec(
        34602, "SalLowDiskSpace", "The backup failed because the volume holding the cache folder is low on space.",
        causes=("The free space on the cache folder's volume is less than 5-10 % of the data you protect.",
                "Other data grew on the same volume, or old job logs piled up in the cache folder."),
        actions=("Check free space with `df -h CACHE` and free some, or move the cache folder to a larger local "
                 "volume (stop the daemon, move the whole folder, record the new place with `safehold settings`).",
                 "Make sure the agent is the latest release.",
                 "Run `safehold doctor` to confirm the cache folder meets its requirements, then try again."),
        http_status=507,
    ),
    ErrorSpec(
        34603, "SalBitmapError", "Change tracking could not find the changes in a file.",
        causes=("The file's checksum store entry disagrees with what the file system reports, for example after "
                "the store was put back from an old copy.",
                "The file system gives unstable inode numbers or times, as some network and FUSE file systems do.",
                "A storage problem on the cache folder's volume damaged the checksum store."),
        actions=("Run the backup again; a one-time mismatch usually clears by itself.",
                 "Make sure the agent is the latest release.",
                 "Check the cache folder with `safehold doctor` and fix any storage problem it reports."),
        retryable=True,
    ),
    ErrorSpec(
        34604, "CacheFolderBlocked", "Another process is blocking access to files in the cache folder.",
        causes=("An on-access virus scanner or another backup tool keeps files in the cache folder open or locked.",
                "A second safehold process uses the same cache folder.",
                "An SELinux or AppArmor policy denies the agent access to the folder."),
        actions=("List the processes holding the folder with `lsof +D CACHE` or `fuser -vm CACHE`.",
                 "Exclude the cache folder and the safehold installation from on-access scanning.",
                 "Stop any second safehold process that uses the same cache folder.",
                 "Look for denials with `ausearch -m avc` or `journalctl -k`, and allow the folder in the policy."),
        http_status=423,
    ),
    ErrorSpec(
        34605, "CacheFolderInvalid", "The cache folder cannot be used: {reason}.",
        causes=("The folder is on a network share, a removable disk, or a file system where safehold cannot lock "
                "files reliably.",
                "The folder does not exist, or the agent's user cannot write to it.",
                "The folder has properties that get in the way: immutable or append-only flags, file system "
                "compression, or per-folder encryption (fscrypt, eCryptfs) that may be locked when the agent runs."),
        actions=("Choose a local folder on an always-attached disk, such as the default "
                 "`~/.local/share/safehold/cache` (or `/var/lib/safehold/cache` for root), given with "
                 "`--cache-folder` at registration.",
                 "Give the agent's user write access to the folder, and clear flags with `chattr -i -a` where set.",
                 "Run `safehold doctor` to confirm the folder is valid."),
    ),
    ErrorSpec(
        34650, "SnapshotStorageInsufficient", "The snapshot used for a consistent backup ran out of space.",
        causes=("The LVM volume group has too little free space for the snapshot's copy-on-write area, or the thin "
                "pool is nearly full.",
                "So much data changed during the backup that the snapshot filled up before the job ended.",
                "The btrfs file system or ZFS pool holding the snapshot is nearly full."),
        actions=("Check the space with `vgs`, `lvs`, `btrfs filesystem usage` or `zpool list`.",
                 "Give the snapshot hook a larger snapshot size, or free space in the volume group or pool.",
                 "Run the backup at a quieter time, so that less data changes while it runs."),
        http_status=507,
    ),
    ErrorSpec(
        34651, "SnapshotHookFailed", "The snapshot hook failed, so the backup could not read from a snapshot.",
        causes=("The hook command exited with an error or could not be found.",
                "The volume is not on LVM, btrfs or ZFS, so no snapshot of it can be taken.",
                "The hook ran without the rights to create or remove snapshots."),
        actions=("Run the hook command by hand as the agent's user and read its error.",
                 "Use a hook that matches the volume's file system, or turn snapshots off for that volume.",
                 "Run the agent as root, or give it the rights the hook needs."),
    ),
)
