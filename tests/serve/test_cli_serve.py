"""``multimodel serve``: arguments, the warning for non-local binds, errors a user can fix."""

from __future__ import annotations

import pytest

from multimodel import cli
from multimodel.serve import is_loopback


@pytest.fixture
def uvicorn_calls(monkeypatch):
    """Replace uvicorn.run so nothing is bound; the calls it would have made."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_parser_defaults_and_options():
    args = cli.build_parser().parse_args(["serve", "runs/x"])
    assert (args.host, args.port, args.max_upload_mb) == ("127.0.0.1", 8000, 10.0)
    args = cli.build_parser().parse_args(["serve", "runs/x", "--host", "::1", "--port", "9", "--max-upload-mb", "2.5"])
    assert (args.host, args.port, args.max_upload_mb) == ("::1", 9, 2.5)


@pytest.mark.parametrize("host,local", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
                                        ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                        ("192.168.1.5", False), ("example.org", False)])
def test_is_loopback(host, local):
    assert is_loopback(host) is local


def test_serve_binds_loopback_by_default_without_warning(tiny_checkpoint, uvicorn_calls, capsys):
    assert cli.main(["serve", str(tiny_checkpoint.run_dir), "--port", "8123", "--max-upload-mb", "3"]) == 0
    (app, kw), = uvicorn_calls
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 8123)
    err = capsys.readouterr().err
    assert "http://127.0.0.1:8123/" in err and "warning" not in err
    assert any(getattr(r, "path", None) == "/api/info" for r in app.routes)


def test_serve_warns_when_bound_beyond_this_machine(tiny_checkpoint, uvicorn_calls, capsys):
    assert cli.main(["serve", str(tiny_checkpoint.run_dir), "--host", "0.0.0.0"]) == 0
    assert uvicorn_calls[0][1]["host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert "warning: binding 0.0.0.0" in err and "no authentication" in err


def test_upload_limit_is_passed_to_the_app(tiny_checkpoint, uvicorn_calls):
    from fastapi.testclient import TestClient

    cli.main(["serve", str(tiny_checkpoint.run_dir), "--max-upload-mb", "0.25"])
    with TestClient(uvicorn_calls[0][0]) as client:
        assert client.get("/api/info").json()["max_upload_bytes"] == 250_000


@pytest.mark.parametrize("argv,message", [
    (["--max-upload-mb", "0"], "--max-upload-mb must be positive"),
    ([], "not-a-checkpoint"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, tiny_checkpoint, uvicorn_calls, capsys, argv, message):
    checkpoint = tiny_checkpoint.run_dir if argv else tmp_path / "not-a-checkpoint"
    assert cli.main(["serve", str(checkpoint), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("multimodel serve: error:") and message in err
    assert not uvicorn_calls


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_port_out_of_range_is_a_usage_error(port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["serve", "runs/x", "--port", port])
    assert exit_info.value.code == 2 and "1-65535" in capsys.readouterr().err
