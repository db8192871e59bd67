"""The CLI as users meet it: bad input gets an error id and an action, never a traceback; --json is parseable."""

from __future__ import annotations

from pathlib import Path

from conftest import Cli


def _clean_error(r, code: int, ident: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == code, (r.code, r.out, r.err)
    assert ident in r.err and "Recommended actions" in r.err, r.err
    assert "Traceback" not in r.err + r.out


def test_not_registered(cli: Cli, tmp_path: Path) -> None:
    _clean_error(cli("backup", tmp_path), 1, "700101")
    _clean_error(cli("recovery-points"), 1, "700101")


def test_bad_input_after_registration(registered: Cli, tmp_path: Path) -> None:
    _clean_error(registered("backup", tmp_path / "does-not-exist"), 2, "700002")
    _clean_error(registered("restore", "ffffffff", "--target", tmp_path / "t"), 2, "700203")
    _clean_error(registered("restore", "latest", "--target", tmp_path / "t"), 2, "700203")
    (tmp_path / "afile").write_text("x")
    registered.ok("backup", tmp_path / "afile")
    r = registered("restore", "latest", "--target", tmp_path / "afile")
    assert r.code == 2 and "is a file" in r.err and "Traceback" not in r.err


def test_vault_init_refuses_existing_data(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _clean_error(cli("vault", "init", tmp_path / "full", "--credentials-out", tmp_path / "c.vaultcredentials"),
                 2, "700202")
    _clean_error(cli("vault", "credentials", tmp_path / "full", "--out", tmp_path / "c.vaultcredentials"),
                 2, "700201")


def test_json_and_listing(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hello")
    r = registered.ok("backup", src, "--json")
    s = r.summary()
    assert s["status"] == "Completed" and s["files"] == 1 and s["bytes_scanned"] == 5
    progress = [e for e in r.json_lines() if e["event"] == "progress"]
    assert progress and {"items", "bytes", "bytes_total", "rate_bps", "eta_s"} <= progress[-1].keys()
    assert progress[-1]["bytes"] == 5 and progress[-1]["items"] >= 1
    listing = registered.ok("recovery-points", "--json").json_lines()[-1]["recovery_points"]
    assert [rp["id"] for rp in listing] == [s["recovery_point"]]
    assert listing[0]["paths"] == [str(src)]
    text = registered.ok("recovery-points").out
    assert s["recovery_point"][:8] in text and str(src) in text


def test_errors_command(cli: Cli) -> None:
    listing = cli.ok("errors").out
    for ident in ("34513", "100110", "34506", "230006", "0x1FC07", "0x80070570", "0x80070005"):
        assert ident in listing
    one = cli.ok("errors", "34513").out
    assert "VaultCredentialsInvalid" in one and "Recommended actions" in one
    assert cli("errors", "99999999").code == 2
