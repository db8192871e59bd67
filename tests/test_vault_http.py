"""The vault server's own promises: authorization, host identity, certificate pinning, proxies, dropped
connections, two replicas on one PostgreSQL catalog, and the OpenAPI document. Real servers on loopback.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold.agent.remote import RemoteAdmin, RemoteVault
from safehold.errors import SafeholdError
from safehold.formats import credentials as credfmt
from safehold.formats import keys as keyfmt
from safehold.formats.chunks import Sealer, chunk_id
from safehold.formats.keys import MachineKeys
from safehold.formats.pack import PackBuilder
from safehold.model import CHUNK_DATA, BackupStats, JobStatus, MachineId, MachineInfo, PackEntry, PackId
from safehold.vault.server import create_app
from safehold.vault.service import VaultService

from conftest import Cli
from pgserver import PgServer
from proxyserver import Proxy
from vaultserver import Forwarder, VaultServer, free_port, make_vault

PASSPHRASE = "http vault passphrase 2026"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Machine:
    id: MachineId
    hostname: str
    keys: MachineKeys
    token: str
    client: RemoteVault


@dataclass
class Served:
    svc: VaultService
    server: VaultServer
    a: Machine
    b: Machine


def _register(svc: VaultService, server: VaultServer, hostname: str) -> Machine:
    keys = MachineKeys.generate()
    info = MachineInfo(MachineId(uuid.uuid4().hex), hostname, "os-id", "0.1.0")
    with RemoteVault(server.url, server.fingerprint, retry_base=0) as anon:
        token = anon.register(svc.issue_credentials(), info, keyfmt.wrap(keys, PASSPHRASE), keys.key_verifier,
                              None)
    client = RemoteVault(server.url, server.fingerprint, token=token, hostname=hostname, retry_base=0)
    return Machine(info.machine_id, hostname, keys, token, client)


def _pack(keys: MachineKeys, payload: bytes) -> tuple[PackId, bytes, list[PackEntry]]:
    sealer = Sealer(keys)
    builder = PackBuilder()
    cid = chunk_id(keys, payload)
    builder.add(cid, CHUNK_DATA, sealer.seal(CHUNK_DATA, cid, payload))
    return builder.finish(sealer)


def _backup(m: Machine, payload: bytes) -> str:
    session = m.client.begin_session(m.id)
    pid, data, entries = _pack(m.keys, payload)
    m.client.put_pack(m.id, session, pid, data, entries)
    root = entries[0].chunk_id
    return m.client.commit(m.id, session, root, JobStatus.COMPLETED, BackupStats(files=1), [root], b"m").rp_id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("served") / "vault"
    svc = make_vault(folder)
    with VaultServer(folder) as server:
        a = _register(svc, server, "alpha")
        b = _register(svc, server, "beta")
        _backup(a, b"alpha's data " * 1000)
        try:
            yield Served(svc, server, a, b)
        finally:
            a.client.close()
            b.client.close()
            svc.close()


def _refused(call: object, code: str) -> SafeholdError:
    with pytest.raises(SafeholdError) as exc:
        call()  # type: ignore[operator]
    assert exc.value.spec.code == code, str(exc.value)
    return exc.value


# ---- authorization -------------------------------------------------------------------------------------

def test_a_machine_cannot_read_list_or_delete_another_machines_data(served: Served) -> None:
    a, b = served.a, served.b
    [rp] = a.client.recovery_points(a.id)
    [(pid, _size)] = a.client.packs(a.id)
    ids = list(a.client.known_chunks(a.id))
    with_b = b.client
    attempts = {
        "list recovery points": lambda: with_b.recovery_points(a.id),
        "list packs": lambda: with_b.packs(a.id),
        "list chunks": lambda: with_b.known_chunks(a.id),
        "read the index": lambda: list(with_b.index(a.id)),
        "read refs": lambda: with_b.refs(a.id, rp.rp_id),
        "read a pack": lambda: with_b.read_pack(a.id, pid),
        "read a range": lambda: with_b.read(a.id, pid, 8, 16),
        "locate": lambda: with_b.locate(a.id, ids),
        "fetch the wrapped key": lambda: with_b.wrapped_key(a.id),
        "delete (forget) chunks": lambda: with_b.forget_chunks(a.id, ids),
        "open a session": lambda: with_b.begin_session(a.id),
    }
    for what, call in attempts.items():
        err = _refused(call, "AccessDenied")
        assert "own data" in err.text, what
    # nothing of a's changed
    assert a.client.recovery_points(a.id) == [rp]
    assert list(a.client.known_chunks(a.id)) == ids
    # and b still reaches its own
    assert b.client.recovery_points(b.id) == []


def test_unknown_or_missing_token_is_refused(served: Served) -> None:
    with RemoteVault(served.server.url, served.server.fingerprint, token="shm_not-a-token", hostname="alpha",
                     retry_base=0) as forged:
        _refused(lambda: forged.recovery_points(served.a.id), "TokenInvalid")
    with RemoteVault(served.server.url, served.server.fingerprint, retry_base=0) as anonymous:
        _refused(lambda: anonymous.recovery_points(served.a.id), "TokenInvalid")


def test_admin_routes_need_the_admin_token(served: Served) -> None:
    url, fp = served.server.url, served.server.fingerprint
    with RemoteAdmin(url, fp, token=served.a.token, retry_base=0) as as_machine:
        _refused(lambda: as_machine.issue_credentials(10), "AccessDenied")
        _refused(as_machine.machines, "AccessDenied")
        _refused(lambda: as_machine.settings(max_machines=1), "AccessDenied")
    with RemoteAdmin(url, fp, token="sha_guessed", retry_base=0) as guessed:
        _refused(guessed.machines, "AccessDenied")
    assert served.svc.info().max_machines == 50
    with RemoteAdmin(url, fp, token=served.server.admin_token, retry_base=0) as admin:
        assert {m["hostname"] for m in admin.machines()} >= {"alpha", "beta"}
        creds = credfmt.parse("x.vaultcredentials", admin.issue_credentials(5))
    assert creds.vault_id == served.svc.vault_id


def test_replacing_the_admin_token_locks_out_the_old_one(served: Served, cli: Cli) -> None:
    url, fp = served.server.url, served.server.fingerprint
    old = served.server.admin_token
    cli.ok("vault", "admin-token", served.server.folder)
    new = served.server.admin_token
    assert new != old and (served.server.folder / "admin.token").stat().st_mode & 0o077 == 0
    with RemoteAdmin(url, fp, token=old, retry_base=0) as stale:
        _refused(stale.machines, "AccessDenied")
    with RemoteAdmin(url, fp, token=new, retry_base=0) as admin:
        assert len(admin.machines()) >= 2


def test_a_stolen_credentials_file_is_useless_once_used_or_superseded(served: Served) -> None:
    url, fp = served.server.url, served.server.fingerprint
    with RemoteAdmin(url, fp, token=served.server.admin_token, retry_base=0) as admin:
        first = credfmt.parse("a.vaultcredentials", admin.issue_credentials(5))
        second = credfmt.parse("b.vaultcredentials", admin.issue_credentials(5))
    keys = MachineKeys.generate()
    wrapped = keyfmt.wrap(keys, PASSPHRASE)
    with RemoteVault(url, fp, retry_base=0) as thief:
        err = _refused(lambda: thief.register(first, MachineInfo(MachineId(uuid.uuid4().hex), "thief", "x", "0"),
                                              wrapped, keys.key_verifier, None), "VaultCredentialsInvalid")
        assert "newer" in err.text
        thief.register(second, MachineInfo(MachineId(uuid.uuid4().hex), "owner", "x", "0"), wrapped,
                       keys.key_verifier, None)
        err = _refused(lambda: thief.register(second, MachineInfo(MachineId(uuid.uuid4().hex), "thief", "x", "0"),
                                              wrapped, keys.key_verifier, None), "VaultCredentialsInvalid")
        assert "already used" in err.text
        # taking over a registered machine's id needs that machine's key
        err = _refused(lambda: thief.register(second, MachineInfo(served.a.id, "thief", "x", "0"), wrapped,
                                              keys.key_verifier, keys.auth_key), "VaultCredentialsInvalid")


# ---- identity and trust ---------------------------------------------------------------------------------

def test_a_renamed_host_is_refused_with_230006(served: Served) -> None:
    with RemoteVault(served.server.url, served.server.fingerprint, token=served.a.token, hostname="alpha-new",
                     retry_base=0) as renamed:
        err = _refused(lambda: renamed.recovery_points(served.a.id), "ServerRenamed")
    assert err.spec.id == 230006
    assert "'alpha'" in err.text and "'alpha-new'" in err.text
    assert any("hostnamectl" in a for a in err.actions)
    assert any("register" in a for a in err.actions)


def test_a_certificate_other_than_the_pinned_one_is_refused(served: Served, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    with RemoteVault(served.server.url, wrong, token=served.a.token, hostname="alpha", retry_base=0) as pinned:
        err = _refused(lambda: pinned.recovery_points(served.a.id), "VaultCertificateUntrusted")
    assert err.spec.id == 34638
    assert served.server.fingerprint in err.text and wrong in err.text
    assert any("register again" in a for a in err.actions)


def test_an_unreachable_vault_gives_100050_with_the_checks(tmp_path: Path) -> None:
    port = free_port()
    with RemoteVault(f"https://127.0.0.1:{port}", "sha256:" + "0" * 64, retry_base=0) as vault:
        err = _refused(vault.info, "VaultUnreachable")
    assert err.spec.id == 100050 and err.variant is None
    assert "refused" in err.text.lower()
    assert any("safehold doctor" in a for a in err.actions)
    assert any("firewall" in a for a in err.actions)


# ---- proxies ---------------------------------------------------------------------------------------------

def test_the_vault_is_reached_through_a_proxy_with_credentials(served: Served) -> None:
    with Proxy(user="agent", password="pr0xy-secret") as proxy, RemoteVault(
            served.server.url, served.server.fingerprint, token=served.a.token, hostname="alpha",
            proxy=proxy.url, proxy_auth=("agent", "pr0xy-secret"), retry_base=0) as vault:
        assert len(vault.recovery_points(served.a.id)) == 1
        assert f"127.0.0.1:{served.server.port}" in proxy.connect_targets()


def test_a_proxy_asking_for_credentials_gives_100050_with_proxy_actions(served: Served) -> None:
    with Proxy(user="agent", password="pr0xy-secret") as proxy:
        for auth in (None, ("agent", "wrong")):
            with RemoteVault(served.server.url, served.server.fingerprint, token=served.a.token, hostname="alpha",
                             proxy=proxy.url, proxy_auth=auth, retry_base=0) as vault:
                err = _refused(lambda v=vault: v.recovery_points(served.a.id), "VaultUnreachable")
            assert err.variant == "proxy-auth"
            assert any("--proxy-user" in a for a in err.actions)
        assert proxy.requests_seen() == 2  # refused at once, not retried six times


def test_the_environment_proxy_is_used(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    with Proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with RemoteVault(served.server.url, served.server.fingerprint, token=served.a.token, hostname="alpha",
                         retry_base=0) as vault:
            assert len(vault.recovery_points(served.a.id)) == 1
        assert proxy.requests_seen() == 1
        with RemoteVault(served.server.url, served.server.fingerprint, token=served.a.token, hostname="alpha",
                         use_env=False, retry_base=0) as direct:
            direct.recovery_points(served.a.id)
        assert proxy.requests_seen() == 1


# ---- dropped connections -----------------------------------------------------------------------------------

def test_an_upload_cut_short_is_sent_again_and_stored_once(served: Served) -> None:
    a = served.a
    payload = os.urandom(3_000_000)  # incompressible: the pack stays 3 MB
    pid, data, entries = _pack(a.keys, payload)
    with Forwarder(served.server.port, cut_conn=0, cut_upstream_after=1_000_000) as fwd, RemoteVault(
            f"https://127.0.0.1:{fwd.port}", served.server.fingerprint, token=a.token, hostname="alpha",
            retry_base=0) as vault:
        session = vault.begin_session(a.id)  # conn 0 carries this, then the upload that is cut
        vault.put_pack(a.id, session, pid, data, entries)
        assert fwd.connections >= 2
    assert (pid, len(data)) in a.client.packs(a.id)
    assert a.client.read_pack(a.id, pid) == data


def test_an_upload_whose_answer_was_lost_is_not_sent_again(served: Served) -> None:
    a = served.a
    pid, data, entries = _pack(a.keys, os.urandom(4_000_000))
    session = a.client.begin_session(a.id)
    with Forwarder(served.server.port, cut_conn=0, drop_answer_after=len(data)) as fwd, RemoteVault(
            f"https://127.0.0.1:{fwd.port}", served.server.fingerprint, token=a.token, hostname="alpha",
            retry_base=0) as vault:
        vault.put_pack(a.id, session, pid, data, entries)
        assert fwd.connections == 2  # the second one only asked whether the pack arrived
        assert len(data) < fwd.upstream_bytes < 1.2 * len(data)
    assert (pid, len(data)) in a.client.packs(a.id)


# ---- scale-out: two servers, one PostgreSQL catalog, one blob store ----------------------------------------

def test_two_replicas_on_one_catalog_serve_one_agent_consistently(tmp_path: Path, pg_url: str) -> None:
    folder = tmp_path / "vault"
    svc = make_vault(folder, pg_url)
    try:
        with VaultServer(folder) as one, VaultServer(folder) as two:
            m = _register(svc, one, "gamma")
            other = RemoteVault(two.url, two.fingerprint, token=m.token, hostname="gamma", retry_base=0)
            with m.client, other:
                session = m.client.begin_session(m.id)
                pid, data, entries = _pack(m.keys, b"replicated " * 5000)
                other.put_pack(m.id, session, pid, data, entries)  # the session began on the other replica
                m.client.put_pack(m.id, session, pid, data, entries)  # a retry landing elsewhere is a no-op
                root = entries[0].chunk_id
                rp = m.client.commit(m.id, session, root, JobStatus.COMPLETED, BackupStats(files=1), [root], b"")
                again = other.commit(m.id, session, root, JobStatus.COMPLETED, BackupStats(files=1), [root], b"")
                assert again.rp_id == rp.rp_id
                assert [r.rp_id for r in other.recovery_points(m.id)] == [rp.rp_id]
                assert other.read_pack(m.id, pid) == m.client.read_pack(m.id, pid) == data
                assert other.packs(m.id) == [(pid, len(data))]
    finally:
        svc.close()


def test_a_catalog_outage_is_503_and_the_agent_retries_through_it(tmp_path: Path, pg_server: PgServer) -> None:
    name = pg_server.create_database()
    folder = tmp_path / "vault"
    svc = make_vault(folder, pg_server.url(name))
    try:
        with VaultServer(folder) as server:
            m = _register(svc, server, "delta")
            with m.client:
                pg_server.set_reachable(name, False)
                try:
                    err = _refused(lambda: m.client.recovery_points(m.id), "CatalogUnavailable")
                    assert err.spec.http_status == 503 and err.spec.retryable
                finally:
                    pg_server.set_reachable(name, True)
                assert m.client.recovery_points(m.id) == []  # back as soon as the database is
    finally:
        svc.close()
        pg_server.drop_database(name)


# ---- the API document ----------------------------------------------------------------------------------------

def test_the_openapi_document_is_served_and_kept_in_docs(served: Served) -> None:
    doc = served.a.client.get("/openapi.json").json()
    kept = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert doc == kept, "docs/openapi.json is stale: run `python scripts/openapi.py`"
    paths = set(doc["paths"])
    for route in create_app(served.svc).routes:
        path = getattr(route, "path", "")
        if path.startswith("/v1/"):
            assert path in paths
    assert "/v1/machines/{machine_id}/packs/{pack_id}" in paths
    assert "/v1/registrations" in paths


# ---- hostile input --------------------------------------------------------------------------------------------

def test_the_pin_also_holds_for_tls_inside_a_tls_proxy_tunnel(served: Served) -> None:
    """An https:// proxy makes httpx speak TLS through an SSLObject over memory; the pin is checked there too."""
    import ssl

    from safehold.agent.remote import PinMismatch, pinned_context
    from safehold.vault import tls

    def handshake(pin: str) -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(tls.cert_path(served.server.folder), tls.key_path(served.server.folder))
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = pinned_context(pin).wrap_bio(c_in, c_out, server_hostname="vault")
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            done = 0
            for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
                try:
                    side.do_handshake()
                    done += 1
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                peer_in.write(out.read())
            if done == 2:
                return

    handshake(served.server.fingerprint)  # the right pin completes
    with pytest.raises(PinMismatch):
        handshake("sha256:" + "1" * 64)


def _raw(served: Served, method: str, path: str, **kw: object) -> SafeholdError:
    with pytest.raises(SafeholdError) as exc:
        served.a.client.request(method, path, retry=False, **kw)  # type: ignore[arg-type]
    return exc.value


def test_large_bodies_are_refused_before_anyone_is_authenticated(served: Served) -> None:
    for path in ("/v1/registrations", "/v1/admin/credentials"):
        err = _raw(served, "POST", path, content=lambda: b"{" + b" " * 200_000 + b"}",
                   headers={"Content-Type": "application/json"})
        assert err.spec.code == "InvalidArgument" and "larger than" in err.text


def test_malformed_requests_are_clean_400s(served: Served) -> None:
    a = served.a
    pid = a.client.packs(a.id)[0][0]
    for bad in ("bytes=\u00b2-3", "bytes=" + "9" * 5000 + "-1", "bytes=0-99999999999999999999", "bytes=5-1",
                "items=0-1"):
        err = _raw(served, "GET", f"/v1/machines/{a.id}/packs/{pid}", headers={"Range": bad.encode("utf-8")})
        assert err.spec.code == "InvalidArgument", bad
    session = a.client.begin_session(a.id)
    header = (70_000).to_bytes(4, "little")
    err = _raw(served, "PUT", f"/v1/machines/{a.id}/packs/{'0' * 64}", params={"session": session},
               content=lambda: header + b"\0" * 1000)
    assert err.spec.code == "InvalidArgument" and "entries" in err.text
    err = _raw(served, "PUT", f"/v1/machines/{a.id}/packs/{'0' * 64}", params={"session": "x" * 5000},
               content=lambda: b"\0\0\0\0")
    assert err.spec.code == "InvalidArgument"
    err = _raw(served, "GET", f"/v1/machines/{a.id}/recovery-points/{'z' * 500}/refs")
    assert err.spec.code == "InvalidArgument"
    with RemoteVault(served.server.url, served.server.fingerprint, token=a.token, retry_base=0) as nameless:
        with pytest.raises(SafeholdError) as exc:
            nameless.recovery_points(a.id)
        assert exc.value.spec.code == "InvalidArgument" and "Hostname" in exc.value.text


def test_one_credentials_file_registers_one_machine_even_when_raced(tmp_path: Path, pg_url: str) -> None:
    import threading

    folder = tmp_path / "vault"
    svc = make_vault(folder, pg_url)
    try:
        with VaultServer(folder) as one, VaultServer(folder) as two:
            creds = svc.issue_credentials()
            outcomes: list[str] = []
            barrier = threading.Barrier(2)

            def attempt(server: VaultServer) -> None:
                keys = MachineKeys.generate()
                info = MachineInfo(MachineId(uuid.uuid4().hex), f"racer-{server.port}", "x", "0")
                with RemoteVault(server.url, server.fingerprint, retry_base=0) as anon:
                    barrier.wait()
                    try:
                        anon.register(creds, info, keyfmt.wrap(keys, PASSPHRASE), keys.key_verifier, None)
                        outcomes.append("registered")
                    except SafeholdError as exc:
                        outcomes.append(exc.spec.code)

            threads = [threading.Thread(target=attempt, args=(s,)) for s in (one, two)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert sorted(outcomes) == ["VaultCredentialsInvalid", "registered"]
            assert len(svc.machines()) == 1
    finally:
        svc.close()


# ---- restoring another machine's data -------------------------------------------------------------------------

def test_a_restore_grant_reads_one_machine_and_writes_nothing(served: Served) -> None:
    a, b = served.a, served.b
    creds = served.svc.issue_credentials()
    info, wrapped = b.client.recovery_source(creds, "alpha", b.id)
    assert info.machine_id == a.id and info.hostname == "alpha"
    with pytest.raises(SafeholdError) as exc:
        keyfmt.unwrap(wrapped, "not alpha's passphrase at all")
    assert exc.value.spec.code == "WrongPassphrase"
    intruder = MachineKeys.generate()
    _refused(lambda: b.client.grant_recovery(creds, a.id, b.id, intruder.auth_key), "WrongPassphrase")
    keys = keyfmt.unwrap(wrapped, PASSPHRASE)
    token = b.client.grant_recovery(creds, a.id, b.id, keys.auth_key)
    _refused(lambda: b.client.grant_recovery(creds, a.id, b.id, keys.auth_key), "VaultCredentialsInvalid")
    url, fp = served.server.url, served.server.fingerprint
    with RemoteVault(url, fp, token=token, hostname="beta", retry_base=0) as granted:
        assert [rp.rp_id for rp in granted.recovery_points(a.id)] == [rp.rp_id for rp in a.client.recovery_points(a.id)]
        pid = granted.packs(a.id)[0][0]
        assert granted.read_pack(a.id, pid) == a.client.read_pack(a.id, pid)
        _refused(lambda: granted.begin_session(a.id), "AccessDenied")
        _refused(lambda: granted.forget_chunks(a.id, list(granted.known_chunks(a.id))), "AccessDenied")
        _refused(lambda: granted.recovery_points(b.id), "AccessDenied")
    with RemoteVault(url, fp, token=token, hostname="alpha", retry_base=0) as elsewhere:
        _refused(lambda: elsewhere.recovery_points(a.id), "ServerRenamed")  # the grant is beta's
