"""The agent's client of a vault server: `ports.VaultClient` over HTTPS (docs/protocol.md).

It pins the vault's certificate fingerprint, goes through a proxy when told to, retries what failed in transport
with backoff, and turns every failure into the catalog error the embedded vault would raise. Not the server.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import random
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self

import httpx
import msgspec

from safehold import __version__
from safehold.errors import BY_CODE, SafeholdError, error, raise_error
from safehold.formats import wire
from safehold.formats.credentials import VaultCredentials
from safehold.formats.policy import Retention
from safehold.model import (
    BackupStats,
    ChunkId,
    ChunkLocation,
    JobRecord,
    JobStatus,
    MachineId,
    MachineInfo,
    PackEntry,
    PackId,
    RecoveryPoint,
    VaultId,
    VaultInfo,
)

MAX_ATTEMPTS = 6
BASE_DELAY = 0.25
MAX_DELAY = 8.0
UPLOAD_PIECE = 1024 * 1024
RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_CODES = frozenset({"CatalogUnavailable", "VaultUnreachable"})


class PinMismatch(ssl.SSLError):
    """The server's certificate is not the one pinned at registration."""


def _check_pin(context: ssl.SSLContext, der: bytes | None) -> None:
    expected = getattr(context, "pin", None)
    presented = "sha256:" + hashlib.sha256(der or b"").hexdigest()
    if expected != presented:
        raise PinMismatch(f"the vault presented certificate {presented}, the pinned one is {expected}")


class _PinnedSocket(ssl.SSLSocket):
    """TLS straight over a socket (direct, or through an http:// proxy's CONNECT tunnel)."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        try:
            _check_pin(self.context, self.getpeercert(binary_form=True))
        except PinMismatch:
            self.close()
            raise


class _PinnedObject(ssl.SSLObject):
    """TLS inside TLS (a tunnel through an https:// proxy): httpcore drives an SSLObject over memory."""

    def do_handshake(self) -> None:
        super().do_handshake()  # raises SSLWantRead/WriteError until the handshake is complete
        _check_pin(self.context, self.getpeercert(binary_form=True))


class PinnedContext(ssl.SSLContext):
    """Trust exactly one certificate, by fingerprint, checked inside the handshake before any request is sent."""

    pin: str


def pinned_context(fingerprint: str) -> PinnedContext:
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the chain is not what we trust; the fingerprint below is
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.pin = fingerprint
    ctx.sslsocket_class = _PinnedSocket
    ctx.sslobject_class = _PinnedObject
    return ctx


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


# Answers without a safehold error body (HEAD, or a proxy's own page): what their status means.
_BY_STATUS = {401: "TokenInvalid", 403: "AccessDenied", 503: "CatalogUnavailable"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


class VaultHttp:
    """The transport to one vault server: pinned TLS, proxy, retries, and errors as catalog errors."""

    def __init__(self, url: str, fingerprint: str, *, token: str | None = None, hostname: str | None = None,
                 proxy: str | None = None, proxy_auth: tuple[str, str] | None = None, use_env: bool = True,
                 retry_base: float | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        host = httpx.URL(self.url).host
        env_proxy = urllib.request.getproxies_environment().get("https") if use_env else None
        used = proxy or (env_proxy if env_proxy and not urllib.request.proxy_bypass(host) else None)
        self.proxy_used = _without_credentials(used) if used else None  # shown in errors: never a password
        headers = {"User-Agent": f"safehold/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if hostname:
            headers[wire.HOSTNAME_HEADER] = hostname
        env_base = os.environ.get("SAFEHOLD_RETRY_BASE")
        self.retry_base = retry_base if retry_base is not None else float(env_base) if env_base else BASE_DELAY
        self._http = httpx.Client(
            base_url=self.url, verify=pinned_context(fingerprint), headers=headers, follow_redirects=False,
            proxy=httpx.Proxy(proxy, auth=proxy_auth) if proxy else None, trust_env=proxy is None and use_env,
            timeout=httpx.Timeout(timeout, connect=20.0))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ----------------------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> SafeholdError:
        for inner in _chain(exc):
            if isinstance(inner, PinMismatch):
                return error("VaultCertificateUntrusted", detail=str(inner))
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ProxyError):
            # 407 asks for credentials; tinyproxy answers wrong ones with 401 on the CONNECT
            variant = "proxy-auth" if "407" in text or "401" in text else "proxy"
            return error("VaultUnreachable", detail=f"the proxy {self.proxy_used} answered {text}", variant=variant,
                         url=self.url)
        if isinstance(exc, httpx.ConnectError) and self.proxy_used:
            return error("VaultUnreachable", detail=f"through the proxy {self.proxy_used}: {text}", variant="proxy",
                         url=self.url)
        if isinstance(exc, httpx.TimeoutException):
            text = f"no answer in time ({type(exc).__name__})"
        return error("VaultUnreachable", detail=text, url=self.url)

    def _answer_error(self, resp: httpx.Response) -> SafeholdError:
        if resp.status_code == 407:
            return error("VaultUnreachable", detail="the proxy answered 407 Proxy Authentication Required",
                         variant="proxy-auth", url=self.url)
        try:
            doc = resp.json()["error"]
            spec = BY_CODE[doc["code"]]
            params = {str(k): str(v) for k, v in dict(doc.get("params") or {}).items()}
            detail = doc.get("detail")
            variant = doc.get("variant")
            if variant is not None and variant not in {n for n, _ in spec.variants}:
                variant = None
            return SafeholdError(spec, params, str(detail) if detail else None, variant)
        except (ValueError, KeyError, TypeError, AttributeError):
            code = _BY_STATUS.get(resp.status_code)
            if code == "AccessDenied":
                return error(code, reason=f"HTTP {resp.status_code}")
            if code == "CatalogUnavailable":
                return error(code, reason=f"HTTP {resp.status_code}")
            if code is not None:
                return error(code)
            return error("VaultProtocolError", detail=f"HTTP {resp.status_code} without a safehold error",
                         url=self.url)

    def _sleep(self, attempt: int) -> None:
        delay = min(MAX_DELAY, self.retry_base * (2 ** attempt)) * random.uniform(0.5, 1.0)  # noqa: S311
        if delay > 0:
            time.sleep(delay)

    def request(self, method: str, path: str, *, retry: bool = True,
                 content: Callable[[], bytes | Iterator[bytes]] | None = None,
                 skip_if: Callable[[], bool] | None = None, ok: tuple[int, ...] = (200, 204, 206),
                 **kw: Any) -> httpx.Response | None:
        """Send with retries; `content` makes a fresh body per attempt; `skip_if` may end retrying early."""
        attempt = 0
        while True:
            try:
                resp = self._http.request(method, path, content=content() if content else None, **kw)
            except httpx.TransportError as exc:
                err = self._transport_error(exc)
                if not retry or err.spec.code == "VaultCertificateUntrusted" or err.variant == "proxy-auth" or \
                        attempt + 1 >= MAX_ATTEMPTS:
                    raise err from exc
            else:
                if resp.status_code in ok:
                    return resp
                err = self._answer_error(resp)
                if not (retry and (resp.status_code in RETRY_STATUSES or err.spec.code in RETRY_CODES)) or \
                        attempt + 1 >= MAX_ATTEMPTS:
                    raise err
            self._sleep(attempt)
            attempt += 1
            if skip_if is not None and skip_if():
                return None

    def get(self, path: str, **kw: Any) -> httpx.Response:
        resp = self.request("GET", path, **kw)
        assert resp is not None
        return resp

    def post(self, path: str, **kw: Any) -> httpx.Response:
        resp = self.request("POST", path, **kw)
        assert resp is not None
        return resp



class RemoteVault(VaultHttp):
    """`ports.VaultClient` of a vault server, as one machine (with its token) or as a registering agent."""

    # Called with each upload piece's size before it is sent (upload throttling, agent/throttle.py).
    pace: Callable[[int], None] | None = None

    def _m(self, machine_id: MachineId) -> str:
        return f"{wire.API}/machines/{machine_id}"

    def info(self) -> VaultInfo:
        return self.probe()[0]

    def probe(self) -> tuple[VaultInfo, float | None]:
        """The vault's info and its clock (the answer's Date header, seconds since the epoch)."""
        resp = self.get(f"{wire.API}/info", retry=False)
        doc = resp.json()
        info = VaultInfo(VaultId(doc["vault_id"]), doc["name"], doc["version"], int(doc["max_machines"]))
        try:
            when = email.utils.parsedate_to_datetime(resp.headers["date"]).timestamp()
        except (KeyError, TypeError, ValueError):
            when = None
        return info, when

    def register(self, creds: VaultCredentials, machine: MachineInfo, wrapped_key: bytes, key_verifier: str,
                 key_proof: bytes | None) -> str:
        body = {
            "vault_id": creds.vault_id, "credential_id": creds.credential_id,
            "secret": base64.urlsafe_b64encode(creds.secret).decode(), "expires_ns": creds.expires_ns,
            "machine": {"machine_id": machine.machine_id, "hostname": machine.hostname,
                        "os_machine_id": machine.os_machine_id, "agent_version": machine.agent_version},
            "wrapped_key": base64.b64encode(wrapped_key).decode(), "key_verifier": key_verifier,
            "key_proof": key_proof.hex() if key_proof else None,
        }
        # A credentials file works once: a registration that may have reached the vault is never resent.
        doc = self.post(f"{wire.API}/registrations", json=body, retry=False).json()
        return str(doc["token"])

    @staticmethod
    def _creds(creds: VaultCredentials) -> dict[str, Any]:
        return {"vault_id": creds.vault_id, "credential_id": creds.credential_id,
                "secret": base64.urlsafe_b64encode(creds.secret).decode(), "expires_ns": creds.expires_ns}

    def recovery_source(self, creds: VaultCredentials, source: str, grantee: MachineId) -> tuple[MachineInfo, bytes]:
        doc = self.post(f"{wire.API}/recoveries/source", json={"credentials": self._creds(creds), "source": source}
                        ).json()
        info = MachineInfo(MachineId(doc["machine_id"]), doc["hostname"], "", "")
        return info, base64.b64decode(doc["wrapped_key"])

    def grant_recovery(self, creds: VaultCredentials, source: MachineId, grantee: MachineId, key_proof: bytes) -> str:
        # uses the credentials file up: never resent
        doc = self.post(f"{wire.API}/recoveries/grant", retry=False, json={
            "credentials": self._creds(creds), "machine_id": source, "key_proof": key_proof.hex()}).json()
        return str(doc["token"])

    def wrapped_key(self, machine_id: MachineId) -> bytes:
        return self.get(f"{self._m(machine_id)}/key").content

    def known_chunks(self, machine_id: MachineId) -> Iterable[ChunkId]:
        return wire.sorted_ids(self.get(f"{self._m(machine_id)}/chunks").content)

    def begin_session(self, machine_id: MachineId) -> str:
        return str(self.post(f"{self._m(machine_id)}/sessions").json()["session"])

    def chunk_epoch(self, machine_id: MachineId) -> int:
        try:
            epoch = self.get(f"{self._m(machine_id)}/chunk-epoch").json()["chunk_epoch"]
        except (ValueError, KeyError, TypeError):
            epoch = None
        if type(epoch) is not int or epoch < 0:
            raise_error("VaultProtocolError", url=self.url, detail="the chunk epoch is not a count")
        return epoch

    def abort_session(self, machine_id: MachineId, session: str) -> None:
        self.request("DELETE", f"{self._m(machine_id)}/sessions/{session}")

    def has_pack(self, machine_id: MachineId, pack_id: PackId) -> bool:
        resp = self.request("HEAD", f"{self._m(machine_id)}/packs/{pack_id}", ok=(200, 404))
        return resp is not None and resp.status_code == 200

    def put_pack(self, machine_id: MachineId, session: str, pack_id: PackId, data: bytes | memoryview,
                 entries: list[PackEntry]) -> None:
        header = wire.pack_upload_header(entries)
        view = memoryview(data)

        def body() -> Iterator[bytes]:
            yield header
            for i in range(0, len(view), UPLOAD_PIECE):
                if self.pace is not None:  # upload throttling spaces the pieces, not just whole packs
                    self.pace(min(UPLOAD_PIECE, len(view) - i))
                yield view[i:i + UPLOAD_PIECE]  # type: ignore[misc]  # sent as is: no copy of the pack

        self.request("PUT", f"{self._m(machine_id)}/packs/{pack_id}", params={"session": session},
                      content=body, skip_if=lambda: self.has_pack(machine_id, pack_id),
                      headers={"Content-Type": wire.PACK_MEDIA_TYPE,
                               "Content-Length": str(len(header) + len(data))})

    def commit(self, machine_id: MachineId, session: str, root: ChunkId, status: JobStatus,
               stats: BackupStats, refs: Iterable[ChunkId], sealed_meta: bytes,
               keep_until_ns: int | None = None) -> RecoveryPoint:
        body = wire.encode_commit(root, status, stats, refs, sealed_meta, keep_until_ns)
        # Committing a session twice returns the first recovery point, so a lost answer may be retried.
        resp = self.post(f"{self._m(machine_id)}/sessions/{session}/commit", content=lambda: body,
                          headers={"Content-Type": wire.MSGPACK_MEDIA_TYPE})
        return wire.rp_from_json(resp.json())

    def forget_chunks(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> int:
        body = wire.join_ids(list(ids))
        # not resent: a second try after a lost answer would report 0 removed
        return int(self.post(f"{self._m(machine_id)}/forget", content=lambda: body, retry=False)
                   .json()["removed"])

    def set_retention(self, machine_id: MachineId, rules: Retention) -> None:
        body = msgspec.json.encode(rules)
        self.request("PUT", f"{self._m(machine_id)}/retention", content=lambda: body,
                     headers={"Content-Type": "application/json"})

    def retention(self, machine_id: MachineId) -> Retention | None:
        doc = self.get(f"{self._m(machine_id)}/retention").json()
        if doc.get("rules") is None:
            return None
        return msgspec.convert(doc["rules"], type=Retention)

    def report_jobs(self, machine_id: MachineId, jobs: list[JobRecord]) -> None:
        body = msgspec.json.encode([wire.job_to_json(j) for j in jobs])
        self.request("POST", f"{self._m(machine_id)}/jobs", content=lambda: body,
                     headers={"Content-Type": "application/json"})

    def jobs(self, machine_id: MachineId, limit: int = 100) -> list[JobRecord]:
        docs = self.get(f"{self._m(machine_id)}/jobs?limit={int(limit)}").json()
        return [wire.job_from_json(d) for d in docs]

    def recovery_points(self, machine_id: MachineId) -> list[RecoveryPoint]:
        return [wire.rp_from_json(d) for d in self.get(f"{self._m(machine_id)}/recovery-points").json()]

    def locate(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> dict[ChunkId, ChunkLocation]:
        wanted = list(dict.fromkeys(ids))
        out: dict[ChunkId, ChunkLocation] = {}
        step = wire.MAX_IDS_BODY // 32
        for i in range(0, len(wanted), step):
            body = wire.join_ids(wanted[i:i + step])
            out.update(wire.parse_locations(self.post(f"{self._m(machine_id)}/locate", content=lambda b=body: b)
                                            .content))
        return out

    def read(self, machine_id: MachineId, pack_id: PackId, offset: int, length: int) -> bytes:
        resp = self.get(f"{self._m(machine_id)}/packs/{pack_id}",
                         headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        if len(resp.content) != length:
            raise_error("IntegrityError", what=f"pack {pack_id[:16]} range {offset}+{length} came back short")
        return resp.content

    def packs(self, machine_id: MachineId) -> list[tuple[PackId, int]]:
        return [(PackId(d["pack_id"]), int(d["size"])) for d in self.get(f"{self._m(machine_id)}/packs").json()]

    def read_pack(self, machine_id: MachineId, pack_id: PackId) -> bytes:
        return self.get(f"{self._m(machine_id)}/packs/{pack_id}").content

    def index(self, machine_id: MachineId) -> Iterator[tuple[ChunkId, ChunkLocation]]:
        yield from wire.parse_locations(self.get(f"{self._m(machine_id)}/index").content)

    def refs(self, machine_id: MachineId, rp_id: str) -> list[ChunkId]:
        return wire.split_ids(self.get(f"{self._m(machine_id)}/recovery-points/{rp_id}/refs").content)


class RemoteAdmin(VaultHttp):
    """The admin routes of a vault server; construct it with the admin token."""

    def issue_credentials(self, valid_days: float) -> bytes:
        return self.post(f"{wire.API}/admin/credentials", json={"valid_days": valid_days},
                                 retry=False).content

    def settings(self, **changes: Any) -> dict[str, Any]:
        if changes:
            doc = self.request("PATCH", f"{wire.API}/admin/settings", json=changes)
        else:
            doc = self.get(f"{wire.API}/admin/settings")
        assert doc is not None
        result: dict[str, Any] = doc.json()
        return result

    def machines(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(f"{wire.API}/admin/machines").json()
        return result

    def jobs(self, limit: int = 100, machine: str | None = None) -> dict[str, Any]:
        params = {"limit": str(int(limit)), **({"machine": machine} if machine else {})}
        result: dict[str, Any] = self.get(f"{wire.API}/admin/jobs?{urllib.parse.urlencode(params)}").json()
        return result
