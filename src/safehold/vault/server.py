"""The vault's HTTP API (docs/protocol.md): FastAPI routes in front of one `VaultService`.

Routes authenticate, check that a machine only reaches its own data, translate bodies with `formats.wire`, and
hand everything else to the service. Not the process that serves them: `cli/cmd_vault_serve.py` runs uvicorn.
"""


import base64
import binascii
import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safehold import __version__
from safehold.errors import SafeholdError, error, raise_error
from safehold.formats import wire
from safehold.formats.credentials import VaultCredentials
from safehold.formats.policy import Retention
from safehold.model import JobRecord, JobStatus, MachineId, MachineInfo, PackId
from safehold.vault.housekeeping import Housekeeping
from safehold.vault.service import VaultService

log = logging.getLogger("safehold.vault")
OCTETS = "application/octet-stream"
JSON_LIMIT = 64 * 1024
STREAM_BATCH = 64 * 1024


def _binary_body(media_type: str, description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


def _binary_answer(description: str, media_type: str = OCTETS) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {media_type: {"schema": {"type": "string",
                                                                                  "format": "binary"}}}}}


class MachineIn(BaseModel):
    machine_id: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")
    hostname: str = Field(min_length=1, max_length=255)
    os_machine_id: str = Field(min_length=1, max_length=64)
    agent_version: str = Field(min_length=1, max_length=32)


class RegistrationIn(BaseModel):
    vault_id: str = Field(max_length=64)
    credential_id: str = Field(max_length=64)
    secret: str = Field(max_length=64, description="base64url of the 32-byte one-time secret")
    expires_ns: int
    machine: MachineIn
    wrapped_key: str = Field(max_length=8192, description="base64 of the passphrase-wrapped key file")
    key_verifier: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]+$")
    key_proof: str | None = Field(default=None, min_length=64, max_length=64, pattern=r"^[0-9a-f]+$")


class CredentialsRef(BaseModel):
    vault_id: str = Field(max_length=64)
    credential_id: str = Field(max_length=64)
    secret: str = Field(max_length=64, description="base64url of the 32-byte one-time secret")
    expires_ns: int


class RecoverySourceIn(BaseModel):
    credentials: CredentialsRef
    source: str = Field(min_length=1, max_length=255, description="machine id, id prefix or host name")


class RecoverySourceOut(BaseModel):
    machine_id: str
    hostname: str
    wrapped_key: str


class GrantIn(BaseModel):
    credentials: CredentialsRef
    machine_id: str = Field(min_length=8, max_length=64, pattern=r"^[0-9a-f]+$")
    key_proof: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]+$")


class GrantOut(BaseModel):
    token: str


class RegistrationOut(BaseModel):
    machine_id: str
    token: str


class VaultInfoOut(BaseModel):
    vault_id: str
    name: str
    version: str
    max_machines: int


class SessionOut(BaseModel):
    session: str


class ChunkEpochOut(BaseModel):
    chunk_epoch: int


class PackOut(BaseModel):
    pack_id: str
    size: int


class RecoveryPointOut(BaseModel):
    rp_id: str
    machine_id: str
    created_ns: int
    root: str
    status: str
    stats: dict[str, int | float]
    sealed_meta: str
    keep_until_ns: int | None = None


class RetentionIn(BaseModel):
    """formats.policy.Retention: how long the vault keeps the machine's points (docs/retention.md)."""

    model_config = ConfigDict(extra="forbid")

    daily_days: int | None = 30
    weekly_weeks: int | None = None
    weekly_days: tuple[str, ...] = Field(default=("sat",), max_length=7)
    monthly_months: int | None = None
    monthly_on: str = Field(default="last-sat", max_length=16)
    yearly_years: int | None = None
    yearly_month: str = Field(default="dec", max_length=3)
    yearly_on: str = Field(default="last-sat", max_length=16)
    timezone: str = Field(default="UTC", max_length=64)


class RetentionOut(BaseModel):
    rules: RetentionIn | None


class JobIn(BaseModel):
    """model.JobRecord: one job of the machine, reported when it ended (checked again by the service)."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    kind: str = Field(max_length=16)
    trigger: str = Field(max_length=16)
    started_ns: int = Field(ge=0)
    ended_ns: int | None = Field(default=None, ge=0)
    status: str = Field(max_length=32)
    files: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    warnings: int = Field(default=0, ge=0)
    recovery_point: str | None = Field(default=None, max_length=64)
    error_id: str | None = Field(default=None, max_length=16)
    error_text: str | None = Field(default=None, max_length=4000)


class RemovedOut(BaseModel):
    removed: int


class CredentialsIn(BaseModel):
    valid_days: float = 10


class SettingsIn(BaseModel):
    max_machines: int | None = None
    public_url: str | None = None


def _b64(text: str, what: str, urlsafe: bool = False) -> bytes:
    try:
        return (base64.urlsafe_b64decode if urlsafe else base64.b64decode)(text.encode())
    except (binascii.Error, ValueError):
        raise_error("InvalidArgument", what=f"{what} is not valid base64")


def _credentials(ref: CredentialsRef) -> VaultCredentials:
    return VaultCredentials(vault_id=ref.vault_id, vault_name="", url="", tls_fingerprint=None,
                            credential_id=ref.credential_id, secret=_b64(ref.secret, "secret", urlsafe=True),
                            issued_ns=0, expires_ns=ref.expires_ns)


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.startswith("Bearer "):
        raise_error("TokenInvalid", detail="the request carries no bearer token")
    return authorization.removeprefix("Bearer ").strip()


async def _read_body(request: Request, limit: int) -> bytearray:
    """The body as it streams in; refused at once when its declared length is over `limit`, and as soon as it
    grows past it. The buffer grows with what arrives, so a declared length alone reserves no memory."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise_error("InvalidArgument", what=f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise_error("InvalidArgument", what=f"the request body is larger than {limit} bytes")
    return body


def _batched(records: Iterator[bytes]) -> Iterator[bytes]:
    buf = bytearray()
    for rec in records:
        buf += rec
        if len(buf) >= STREAM_BATCH:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def _pack_id(pack_id: str) -> PackId:
    if len(pack_id) != 64 or any(c not in "0123456789abcdef" for c in pack_id):
        raise_error("InvalidArgument", what="a pack id is 64 lowercase hex digits")
    return PackId(pack_id)


def create_app(svc: VaultService) -> FastAPI:
    app = FastAPI(title="safehold vault", version=__version__, summary="The safehold vault protocol v1",
                  description="See docs/protocol.md. Bodies marked binary use the layouts documented there.")
    app.add_middleware(BodyLimit)

    @app.exception_handler(SafeholdError)
    async def safehold_error(_request: Request, exc: SafeholdError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.spec.http_status)

    @app.exception_handler(sa.exc.OperationalError)
    async def catalog_down(_request: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        log.warning("catalog unavailable: %s", exc.orig)  # the details stay on the server
        err = error("CatalogUnavailable", reason="the vault server lost its connection to the database")
        return JSONResponse({"error": err.to_dict()}, status_code=503)

    @app.exception_handler(sa.exc.DBAPIError)
    async def catalog_refused(_request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        log.warning("catalog refused a request: %s", exc.orig)
        err = error("InvalidArgument", what="the catalog refused a value of this request")
        return JSONResponse({"error": err.to_dict()}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        err = error("InvalidArgument", what=f"{where}: {first.get('msg', 'invalid')}")
        return JSONResponse({"error": err.to_dict()}, status_code=400)

    def machine(machine_id: str, authorization: Annotated[str | None, Header()] = None,
                safehold_hostname: Annotated[str | None, Header()] = None) -> MachineId:
        token = _bearer(authorization)
        if not safehold_hostname:
            raise_error("InvalidArgument", what=f"the {wire.HOSTNAME_HEADER} header is missing")
        owner = svc.authenticate(token, safehold_hostname)
        if owner != machine_id:
            raise_error("AccessDenied", reason="a machine's token opens only its own data")
        return owner

    def reader(machine_id: str, authorization: Annotated[str | None, Header()] = None,
               safehold_hostname: Annotated[str | None, Header()] = None) -> MachineId:
        """Like `machine`, for routes that only read: a restore grant for this machine's data also opens them."""
        token = _bearer(authorization)
        if not safehold_hostname:
            raise_error("InvalidArgument", what=f"the {wire.HOSTNAME_HEADER} header is missing")
        owner = svc.authenticate(token, safehold_hostname, write=False)
        if owner != machine_id:
            raise_error("AccessDenied", reason="a machine's token opens only its own data")
        return owner

    def caller(authorization: Annotated[str | None, Header()] = None,
               safehold_hostname: Annotated[str | None, Header()] = None) -> MachineId:
        """The registered machine making the request, whatever data it asks for."""
        token = _bearer(authorization)
        if not safehold_hostname:
            raise_error("InvalidArgument", what=f"the {wire.HOSTNAME_HEADER} header is missing")
        return svc.authenticate(token, safehold_hostname)

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = _bearer(authorization)
        svc.check_admin(token)

    Machine = Annotated[MachineId, Depends(machine)]
    Reader = Annotated[MachineId, Depends(reader)]
    Caller = Annotated[MachineId, Depends(caller)]
    m = f"{wire.API}/machines/{{machine_id}}"

    @app.get(f"{wire.API}/info", response_model=VaultInfoOut, tags=["vault"])
    def info() -> VaultInfoOut:
        i = svc.info()
        return VaultInfoOut(vault_id=i.vault_id, name=i.name, version=i.version, max_machines=i.max_machines)

    @app.post(f"{wire.API}/registrations", response_model=RegistrationOut, tags=["vault"])
    def register(body: RegistrationIn) -> RegistrationOut:
        creds = VaultCredentials(
            vault_id=body.vault_id, vault_name="", url="", tls_fingerprint=None, credential_id=body.credential_id,
            secret=_b64(body.secret, "secret", urlsafe=True), issued_ns=0, expires_ns=body.expires_ns)
        mi = body.machine
        info = MachineInfo(MachineId(mi.machine_id), mi.hostname, mi.os_machine_id, mi.agent_version)
        proof = bytes.fromhex(body.key_proof) if body.key_proof else None
        token = svc.register(creds, info, _b64(body.wrapped_key, "wrapped_key"), body.key_verifier, proof)
        return RegistrationOut(machine_id=mi.machine_id, token=token)

    @app.post(f"{wire.API}/recoveries/source", response_model=RecoverySourceOut, tags=["restore"])
    def recovery_source(body: RecoverySourceIn, grantee: Caller) -> RecoverySourceOut:
        info, key = svc.recovery_source(_credentials(body.credentials), body.source, grantee)
        return RecoverySourceOut(machine_id=info.machine_id, hostname=info.hostname,
                                 wrapped_key=base64.b64encode(key).decode())

    @app.post(f"{wire.API}/recoveries/grant", response_model=GrantOut, tags=["restore"])
    def grant_recovery(body: GrantIn, grantee: Caller) -> GrantOut:
        token = svc.grant_recovery(_credentials(body.credentials), MachineId(body.machine_id), grantee,
                                   bytes.fromhex(body.key_proof))
        return GrantOut(token=token)

    @app.get(f"{m}/key", tags=["machine"], response_class=Response, responses=_binary_answer("the wrapped key"))
    def wrapped_key(mid: Reader) -> Response:
        return Response(svc.wrapped_key(mid), media_type=OCTETS)

    @app.get(f"{m}/chunks", tags=["machine"], response_class=StreamingResponse,
             responses=_binary_answer("32-byte chunk ids"))
    def known_chunks(mid: Reader) -> StreamingResponse:
        data = svc.known_chunks(mid).data  # joined already: sent in slices, not cut into ids and joined again
        return StreamingResponse((data[i:i + STREAM_BATCH] for i in range(0, len(data), STREAM_BATCH)),
                                 media_type=OCTETS)

    @app.post(f"{m}/sessions", response_model=SessionOut, tags=["machine"])
    def begin_session(mid: Machine) -> SessionOut:
        return SessionOut(session=svc.begin_session(mid))

    @app.get(f"{m}/chunk-epoch", response_model=ChunkEpochOut, tags=["machine"])
    def chunk_epoch(mid: Machine) -> ChunkEpochOut:
        return ChunkEpochOut(chunk_epoch=svc.chunk_epoch(mid))

    @app.delete(f"{m}/sessions/{{session}}", status_code=204, tags=["machine"], response_class=Response)
    def abort_session(mid: Machine, session: str) -> Response:
        svc.abort_session(mid, _id(session, "session"))
        return Response(status_code=204)

    @app.head(f"{m}/packs/{{pack_id}}", tags=["machine"], response_class=Response)
    def has_pack(mid: Reader, pack_id: str) -> Response:
        size = svc.pack_size(mid, _pack_id(pack_id))
        if size is None:
            return Response(status_code=404)
        return Response(status_code=200, headers={"Content-Length": str(size)})

    @app.put(f"{m}/packs/{{pack_id}}", status_code=204, tags=["machine"], response_class=Response,
             openapi_extra=_binary_body(wire.PACK_MEDIA_TYPE, "entry count, entries, then the pack bytes"))
    async def put_pack(mid: Machine, pack_id: str, session: str, request: Request) -> Response:
        pid = _pack_id(pack_id)
        body = await _read_body(request, wire.MAX_PACK_BODY)
        if len(body) < 4:
            raise_error("InvalidArgument", what="the pack upload is empty")
        size = wire.header_size(bytes(body[:4]))
        if size > len(body):
            raise_error("InvalidArgument", what="the pack upload header is cut short")
        entries = wire.parse_entries(bytes(body[:size]))
        await run_in_threadpool(svc.put_pack, mid, _id(session, "session"), pid, memoryview(body)[size:], entries)
        return Response(status_code=204)

    @app.get(f"{m}/packs", response_model=list[PackOut], tags=["machine"])
    def packs(mid: Reader) -> list[PackOut]:
        return [PackOut(pack_id=p, size=s) for p, s in svc.packs(mid)]

    @app.get(f"{m}/packs/{{pack_id}}", tags=["machine"], response_class=Response,
             responses=_binary_answer("the pack, or the byte range asked for"))
    def read_pack(mid: Reader, pack_id: str, range_: Annotated[str | None, Header(alias="range")] = None
                  ) -> Response:
        pid = _pack_id(pack_id)
        if range_ is None:
            return Response(svc.read_pack(mid, pid), media_type=OCTETS)
        start, end = _parse_range(range_)
        data = svc.read(mid, pid, start, end - start + 1)
        return Response(data, status_code=206, media_type=OCTETS,
                        headers={"Content-Range": f"bytes {start}-{start + len(data) - 1}/*"})

    @app.post(f"{m}/sessions/{{session}}/commit", response_model=RecoveryPointOut, tags=["machine"],
              openapi_extra=_binary_body(wire.MSGPACK_MEDIA_TYPE, "root, status, stats, sealed_meta, refs"))
    async def commit(mid: Machine, session: str, request: Request) -> dict[str, Any]:
        body = await _read_body(request, wire.MAX_IDS_BODY + 1024 * 1024)
        root, status, stats, refs, sealed, keep_until = wire.decode_commit(bytes(body))
        rp = await run_in_threadpool(svc.commit, mid, _id(session, "session"), root, status, stats, refs, sealed,
                                     keep_until)
        return wire.rp_to_json(rp)

    @app.get(f"{m}/retention", response_model=RetentionOut, tags=["machine"])
    def retention(mid: Reader) -> RetentionOut:
        rules = svc.retention(mid)
        return RetentionOut(rules=None if rules is None else RetentionIn(**msgspec.structs.asdict(rules)))

    @app.put(f"{m}/retention", response_model=RetentionOut, tags=["machine"])
    def set_retention(mid: Machine, body: RetentionIn) -> RetentionOut:
        svc.set_retention(mid, Retention(**body.model_dump()))
        return retention(mid)

    @app.post(f"{m}/jobs", status_code=204, tags=["machine"], response_class=Response)
    def report_jobs(mid: Machine, body: Annotated[list[JobIn], Field(max_length=1000)]) -> Response:
        svc.report_jobs(mid, [_job(j) for j in body])
        return Response(status_code=204)

    @app.get(f"{m}/jobs", response_model=list[JobIn], tags=["machine"])
    def jobs(mid: Reader, limit: int = 100) -> list[dict[str, Any]]:
        return [wire.job_to_json(j) for j in svc.jobs(mid, limit)]

    @app.get(f"{m}/recovery-points", response_model=list[RecoveryPointOut], tags=["machine"])
    def recovery_points(mid: Reader) -> list[dict[str, Any]]:
        return [wire.rp_to_json(rp) for rp in svc.recovery_points(mid)]

    @app.get(f"{m}/recovery-points/{{rp_id}}/refs", tags=["machine"], response_class=Response,
             responses=_binary_answer("32-byte chunk ids"))
    def refs(mid: Reader, rp_id: str) -> Response:
        return Response(wire.join_ids(svc.refs(mid, _id(rp_id, "recovery point"))), media_type=OCTETS)

    @app.post(f"{m}/locate", tags=["machine"], response_class=Response,
              openapi_extra=_binary_body(OCTETS, "32-byte chunk ids"),
              responses=_binary_answer("77-byte location records"))
    async def locate(mid: Reader, request: Request) -> Response:
        ids = wire.split_ids(bytes(await _read_body(request, wire.MAX_IDS_BODY)))
        found = await run_in_threadpool(svc.locate, mid, ids)
        return Response(b"".join(wire.location_record(c, loc) for c, loc in found.items()), media_type=OCTETS)

    @app.get(f"{m}/index", tags=["machine"], response_class=StreamingResponse,
             responses=_binary_answer("77-byte location records"))
    def index(mid: Reader) -> StreamingResponse:
        return StreamingResponse(_batched(wire.location_record(c, loc) for c, loc in svc.index(mid)),
                                 media_type=OCTETS)

    @app.post(f"{m}/forget", response_model=RemovedOut, tags=["machine"],
              openapi_extra=_binary_body(OCTETS, "32-byte chunk ids"))
    async def forget(mid: Machine, request: Request) -> RemovedOut:
        ids = wire.split_ids(bytes(await _read_body(request, wire.MAX_IDS_BODY)))
        return RemovedOut(removed=await run_in_threadpool(svc.forget_chunks, mid, ids))

    # ---- administration ----------------------------------------------------------------------------

    Admin = Depends(admin)
    a = f"{wire.API}/admin"

    @app.post(f"{a}/credentials", tags=["admin"], dependencies=[Admin],
              responses={200: {"description": "the credentials file (JSON)"}})
    def issue_credentials(body: CredentialsIn) -> Response:
        return Response(svc.issue_credentials(body.valid_days).encode(), media_type="application/json")

    @app.get(f"{a}/machines", tags=["admin"], dependencies=[Admin])
    def machines() -> list[dict[str, Any]]:
        return svc.machines()

    @app.get(f"{a}/jobs", tags=["admin"], dependencies=[Admin])
    def all_jobs(limit: int = 100, machine: str | None = None) -> dict[str, Any]:
        hosts = svc.job_machines()
        return {"jobs": [{**wire.job_to_json(j), "machine_id": mid, "hostname": hosts.get(mid, "?")}
                         for mid, j in svc.jobs_with_machines(MachineId(machine) if machine else None, limit)],
                "housekeeping": Housekeeping(svc).history(min(limit, 1000))}

    @app.get(f"{a}/settings", tags=["admin"], dependencies=[Admin])
    def settings() -> dict[str, Any]:
        return _settings(svc)

    @app.patch(f"{a}/settings", tags=["admin"], dependencies=[Admin])
    def change_settings(body: SettingsIn) -> dict[str, Any]:
        if body.max_machines is not None:
            svc.set_max_machines(body.max_machines)
        if body.public_url is not None:
            svc.set_public_url(body.public_url, svc.tls_fingerprint)
        return _settings(svc)

    return app


def _job(j: JobIn) -> JobRecord:
    try:
        status = JobStatus(j.status)
    except ValueError:
        raise_error("InvalidArgument", what="a job report with an unknown status")
    return JobRecord(**{**j.model_dump(), "status": status})


def _settings(svc: VaultService) -> dict[str, Any]:
    i = svc.info()
    return {"vault_id": i.vault_id, "name": i.name, "max_machines": i.max_machines, "public_url": svc.public_url(),
            "tls_fingerprint": svc.tls_fingerprint, "machines": len(svc.machines())}


_RANGE = re.compile(r"bytes=([0-9]{1,15})-([0-9]{1,15})")


def _parse_range(value: str) -> tuple[int, int]:
    m = _RANGE.fullmatch(value.strip())
    if m is None or int(m.group(2)) < int(m.group(1)) or int(m.group(2)) - int(m.group(1)) >= wire.MAX_PACK_BODY:
        raise_error("InvalidArgument", what="only one closed byte range (bytes=a-b, at most 256 MiB) is supported")
    return int(m.group(1)), int(m.group(2))


def _id(value: str, what: str) -> str:
    """Session and recovery point ids are 32 lowercase hex digits."""
    if _HEX32.fullmatch(value) is None:
        raise_error("InvalidArgument", what=f"{what} is not a valid id")
    return value


_HEX32 = re.compile(r"[0-9a-f]{32}")


class BodyLimit:
    """Refuses oversized bodies on the JSON routes before FastAPI reads them, which it does before it checks
    who is asking (registration and admin routes); the binary routes limit their own bodies after auth."""

    def __init__(self, app: ASGIApp, limit: int = JSON_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == f"{wire.API}/registrations" or path.startswith((f"{wire.API}/admin",
                                                                         f"{wire.API}/recoveries"))):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise error("InvalidArgument", what=f"the request body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = error("InvalidArgument", what=f"the request body is larger than {self.limit} bytes")
        await JSONResponse({"error": err.to_dict()}, status_code=413)(scope, receive, send)
