"""Command line: clean errors for user mistakes, exit codes, help texts."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from picojepa.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "picojepa", *args], capture_output=True, text=True, timeout=300)


def test_user_mistakes_give_one_clear_line_not_a_traceback(tmp_path):
    result = run_cli("pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "data path not found" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "huge")
    assert result.returncode == 2 and "unknown preset" in result.stderr
    result = run_cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--set", "model.depht=3")
    assert result.returncode == 2 and "unknown field 'depht'" in result.stderr


def test_data_check_exit_codes(video_folder, tmp_path):
    ok = runner.invoke(app, ["data", "check", str(video_folder), "--quiet"])
    assert ok.exit_code == 0 and "12 usable, 0 unusable" in ok.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"")
    (bad / "y.mp4").write_bytes((video_folder / "left" / "left_0.mp4").read_bytes())
    result = runner.invoke(app, ["data", "check", str(bad), "--quiet"])
    assert result.exit_code == 1 and "empty file" in result.output


def test_pretrain_command_with_overrides(video_folder, tmp_path, cache_dir):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", "--data", str(video_folder), "--out", str(out), "--preset", "tiny",
                                 "--epochs", "1", "--batch-size", "4", "--set", "mask.type=tube", "--workers", "0",
                                 "--cache-dir", str(cache_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "pretrained 3 steps on 12 videos" in result.output
    assert '"type": "tube"' in (out / "config.json").read_text()


def test_help_texts():
    for args in (["--help"], ["pretrain", "--help"], ["data", "check", "--help"], ["presets"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, args
