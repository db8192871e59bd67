"""The test proxy (real tinyproxy on loopback) works, and how httpx reports proxy failures through it."""

from __future__ import annotations

import socket

import httpx
import pytest

from proxyserver import Proxy, TlsServer, proxy_fixture

proxy = proxy_fixture()
authed_proxy = proxy_fixture("alice", "s3cret")

PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def site():
    with TlsServer() as s:
        yield s


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_proxy_starts_listens_and_cleans_up() -> None:
    with Proxy() as p:
        assert p.running
        assert p.url == f"http://127.0.0.1:{p.port}"
        assert p.auth_url == p.url
        with socket.create_connection(("127.0.0.1", p.port), timeout=5):
            pass
        folder = p.dir
        assert folder is not None and folder.is_dir()
        assert "Allow 127.0.0.1" in (folder / "tinyproxy.conf").read_text()
        assert "ConnectPort" not in (folder / "tinyproxy.conf").read_text()
    assert not p.running
    assert not folder.exists()
    assert "Initializing tinyproxy" in p.log_text()  # the log survives stop()


def test_connect_goes_through_the_proxy(proxy: Proxy, site: TlsServer) -> None:
    with httpx.Client(verify=site.ssl_context, trust_env=False) as direct:
        assert direct.get(site.url).status_code == 200
    assert proxy.requests_seen() == 0

    with httpx.Client(proxy=proxy.url, verify=site.ssl_context) as client:
        r = client.get(site.url + "via-proxy")
    assert r.status_code == 200
    assert r.text == "hello from /via-proxy\n"
    assert proxy.connect_targets() == [f"127.0.0.1:{site.port}"]
    assert proxy.requests_seen() == 1


def test_proxy_auth_missing_gives_407(authed_proxy: Proxy, site: TlsServer) -> None:
    with httpx.Client(proxy=authed_proxy.url, verify=site.ssl_context) as client, \
            pytest.raises(httpx.ProxyError, match=r"^407 Proxy Authentication Required$"):
        client.get(site.url)
    assert authed_proxy.requests_seen() == 1  # it reached the proxy, which refused the tunnel


def test_proxy_auth_wrong_is_refused(authed_proxy: Proxy, site: TlsServer) -> None:
    # tinyproxy 1.11 answers a CONNECT with wrong credentials with "401 Unauthorized", not 407.
    for user, password in (("alice", "wrong"), ("bob", "s3cret")):
        with httpx.Client(proxy=f"http://{user}:{password}@127.0.0.1:{authed_proxy.port}",
                          verify=site.ssl_context) as client, \
                pytest.raises(httpx.ProxyError, match=r"^(401 Unauthorized|407 Proxy Authentication Required)$"):
            client.get(site.url)


def test_proxy_auth_right_credentials_pass(authed_proxy: Proxy, site: TlsServer) -> None:
    assert authed_proxy.auth_url == f"http://alice:s3cret@127.0.0.1:{authed_proxy.port}"
    with httpx.Client(proxy=authed_proxy.auth_url, verify=site.ssl_context) as client:
        assert client.get(site.url).status_code == 200
    with httpx.Client(proxy=httpx.Proxy(authed_proxy.url, auth=("alice", "s3cret")),
                      verify=site.ssl_context) as client:
        assert client.get(site.url).status_code == 200
    assert authed_proxy.requests_seen() == 2


def test_failures_as_httpx_reports_them(proxy: Proxy, site: TlsServer, clean_proxy_env: pytest.MonkeyPatch) -> None:
    port = closed_port()
    # the proxy itself is down
    with httpx.Client(proxy=f"http://127.0.0.1:{port}", verify=site.ssl_context) as client, \
            pytest.raises(httpx.ConnectError, match=r"Connection refused") as down:
        client.get(site.url)
    assert isinstance(down.value.__cause__.args[0], ConnectionRefusedError)  # httpx <- httpcore(OSError)
    # the proxy works but the target does not listen: tinyproxy answers the CONNECT with 500
    with httpx.Client(proxy=proxy.url, verify=site.ssl_context) as client, \
            pytest.raises(httpx.ProxyError, match=r"^500 Unable to connect$"):
        client.get(f"https://127.0.0.1:{port}/")
    assert proxy.connect_targets() == [f"127.0.0.1:{port}"]


def test_unresolvable_host_direct(clean_proxy_env: pytest.MonkeyPatch) -> None:
    with httpx.Client() as client, pytest.raises(httpx.ConnectError) as e:
        client.get("https://no-such-host.invalid/")
    assert isinstance(e.value.__cause__.args[0], socket.gaierror)  # httpx <- httpcore(gaierror)


def test_trust_env_https_proxy_and_no_proxy(proxy: Proxy, site: TlsServer,
                                            clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTPS_PROXY", proxy.url)
    with httpx.Client(verify=site.ssl_context) as client:
        assert client.get(site.url).status_code == 200
    assert proxy.requests_seen() == 1

    with httpx.Client(verify=site.ssl_context, trust_env=False) as client:
        assert client.get(site.url).status_code == 200
    assert proxy.requests_seen() == 1

    clean_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    with httpx.Client(verify=site.ssl_context) as client:
        assert client.get(site.url).status_code == 200
    assert proxy.requests_seen() == 1  # bypassed
    # but NO_PROXY does not apply to an explicit proxy=
    with httpx.Client(proxy=proxy.url, verify=site.ssl_context) as client:
        assert client.get(site.url).status_code == 200
    assert proxy.requests_seen() == 2
