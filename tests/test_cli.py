"""Command line: clean errors for user mistakes, exit codes, help texts."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from picojepa.cli import app

runner = CliRunner()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # A guard against hangs only: the quick demo takes ~0.4 min alone but over 5 min on 2 cores shared with two
    # other jobs, so a tight limit would fail a correct run on a busy machine.
    return subprocess.run([sys.executable, "-m", "picojepa", *args], capture_output=True, text=True, timeout=1800)


def test_user_mistakes_give_one_clear_line_not_a_traceback(tmp_path):
    result = run_cli("pretrain", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "data path not found" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--preset", "huge")
    assert result.returncode == 2 and "unknown preset" in result.stderr
    result = run_cli("pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--set", "model.depht=3")
    assert result.returncode == 2 and "unknown field 'depht'" in result.stderr
    for command in ("pretrain", "experiment"):  # two lengths for one run: refused, not one silently preferred
        result = run_cli(command, "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--epochs", "2",
                         "--clip-steps", "100")
        assert result.returncode == 2 and "give one of them" in result.stderr, (command, result.stderr)


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


def test_synth_and_kinetics_commands(tmp_path):
    out = tmp_path / "syn"
    result = runner.invoke(app, ["synth", "--out", str(out), "--classes", "move_left,rotate_cw",
                                 "--videos-per-class", "2", "--size", "32", "--frames", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["move_left", "rotate_cw"]
    root = tmp_path / "k700" / "train"
    for label in ("abseiling", "air drumming", "yoga"):
        (root / label).mkdir(parents=True)
        (root / label / "abc_000001_000011.mp4").write_bytes((out / "move_left" / "move_left_0000.mp4").read_bytes())
    result = runner.invoke(app, ["data", "kinetics", str(tmp_path / "k700"), "--out", str(tmp_path / "subsets"),
                                 "--pretrain-classes", "3", "--labelled-classes", "2"])
    assert result.exit_code == 0, result.output
    labelled = (tmp_path / "subsets" / "labelled.csv").read_text()
    assert "abseiling" in labelled and "air drumming" in labelled and "yoga" not in labelled


def test_quick_demo_runs_end_to_end(tmp_path):
    result = run_cli("demo", "--quick", "--out", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    for mode in ("shared", "independent"):
        assert (tmp_path / "demo" / mode / "report.json").is_file()
        assert (tmp_path / "demo" / mode / "figures" / "accuracy.png").is_file()
    summary = (tmp_path / "demo" / "summary.md").read_text()
    assert "Accuracy per class" in summary and "Gaps vs General" in summary


def test_experiment_help_describes_the_stacker_and_cross_fitting():
    from typer.testing import CliRunner

    from picojepa.cli import app

    text = " ".join(CliRunner().invoke(app, ["experiment", "--help"]).output.split())
    assert "log-probabilities" in text and "member probabilities fitted" not in text
    assert "cross-fitted" in text
