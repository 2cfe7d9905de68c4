"""Experiments fanned out on Ray: same report as the local backend, retries, reuse on rerun."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray_helpers import user_mistake
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.datasets.synth import generate_dataset
from picojepa.errors import PicoJepaError
from picojepa.experiment.backends import Job, LocalBackend, RayBackend, make_backend
from picojepa.experiment.run import ExperimentSettings, run_experiment

TESTS = Path(__file__).resolve().parent
SMALL_STORE = 80 * 2**20  # Ray's object store per node: the jobs pass a few MB
WORKER_PATH = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])  # workers import ray_helpers


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ExperimentSettings:
    data = generate_dataset(tmp_path_factory.mktemp("raysyn") / "labelled", classes=["move_left", "move_right"],
                            videos_per_class=12, size=64, frames=16, fps=8, seed=5, progress=False)
    # Independent mode: three encoders (General + 2 Partials) and three members, each a job of its own.
    return ExperimentSettings(data=str(data), preset="tiny", members=2, mode="independent", probe_epochs=3,
                              overrides=["data.num_workers=0", "train.epochs=2", "train.batch_size=4"])


@pytest.fixture(scope="module")
def local_report(settings, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "exp"
    # One torch thread per job, as on Ray with one CPU per member: the same float rounding.
    result = run_experiment(settings, out, cache_dir=out.parent / "cache", progress=False, figures=False,
                            quiet_tables=True, backend=LocalBackend(threads=1, progress=False))
    return _comparable(result.report, out)


def _user_mistakes_are_not_retried(backend: RayBackend, counter: Path) -> None:
    with pytest.raises(PicoJepaError, match="no node of the Ray cluster"):
        RayBackend(cpus_per_member=3)  # joins the running instance, whose only node has 2 CPUs
    assert ray.is_initialized()  # a backend that joined does not stop what it did not start
    with pytest.raises(PicoJepaError, match="bad input"):
        backend.map("check", [Job("one", user_mistake, (str(counter),), device=False)])
    assert counter.read_text() == "x"  # ran once: a user mistake is not retried
    with pytest.raises(PicoJepaError, match="--backend ray"):
        make_backend("local", gpus_per_member=0.25)


def _comparable(report: dict, out: Path) -> dict:
    """The report without timings, and with the experiment folder written as <out>."""
    text = json.dumps(report).replace(str(out), "<out>")
    timing = {"timings_s", "seconds", "pretrain_seconds"}

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in timing}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return strip(json.loads(text))


def _files(out: Path) -> dict[str, tuple[int, int]]:
    stages = [out / d for d in ("encoders", "features", "classifiers", "members")]
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for d in stages for p in d.rglob("*") if p.is_file()}


def _states(text: str, stage: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, state in re.findall(rf"\[{stage} \d+/\d+\] (\w+): (.+)", text):
        found.setdefault(name, []).append(state.strip())
    return found


def test_local_ray_instance_matches_local_backend_and_a_rerun_recomputes_nothing(settings, local_report,
                                                                                tmp_path, capsys):
    out = tmp_path / "exp"
    options = {"object_store_memory": SMALL_STORE, "runtime_env": {"env_vars": {"PYTHONPATH": WORKER_PATH}}}
    with RayBackend(cpus_per_member=1, local_cpus=2, init_options=options) as backend:
        assert ray.is_initialized()
        _user_mistakes_are_not_retried(backend, tmp_path / "calls")
        first = run_experiment(settings, out, cache_dir=tmp_path / "cache", progress=True, figures=False,
                               quiet_tables=True, backend=backend)
        assert _comparable(first.report, out) == local_report
        before = _files(out)
        capsys.readouterr()
        again = run_experiment(settings, out, cache_dir=tmp_path / "cache", progress=True, figures=False,
                               quiet_tables=True, backend=backend)
    assert not ray.is_initialized()  # the instance it started is gone
    assert _files(out) == before  # nothing finished was written again
    assert _comparable(again.report, out) == local_report
    text = capsys.readouterr().err
    with_baseline = ["general", "partial_1", "partial_2", "random_init"]  # the baseline is not pretrained
    for stage, names in (("pretrain", ["general", "partial_1", "partial_2"]), ("features", with_baseline),
                         ("heads", with_baseline)):
        states = _states(text, stage)
        assert sorted(states) == names, (stage, text[-3000:])
        assert all(s[-1] == "reused (finished earlier)" for s in states.values()), (stage, states)


def test_two_node_cluster_retries_a_failed_member_and_matches_local_backend(settings, local_report, tmp_path, capsys):
    marker = tmp_path / "fault-happened"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": SMALL_STORE})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=SMALL_STORE)
        runtime_env = {"worker_process_setup_hook": "ray_helpers.install",
                       "env_vars": {"PICOJEPA_TEST_FAULT": f"partial_2:{marker}", "PYTHONPATH": WORKER_PATH}}
        out = tmp_path / "exp"
        with RayBackend(address=cluster.address, cpus_per_member=1,
                        init_options={"runtime_env": runtime_env}) as backend:
            result = run_experiment(settings, out, cache_dir=tmp_path / "cache", progress=True, figures=False,
                                    quiet_tables=True, backend=backend)
        assert not ray.is_initialized()
    finally:
        cluster.shutdown()
    assert marker.exists()  # partial_2 did fail once
    assert _comparable(result.report, out) == local_report
    text = capsys.readouterr().err
    pretrain = _states(text, "pretrain")
    assert any("attempt 2, after a failure" in s for s in pretrain["partial_2"]), pretrain
    nodes = set(re.findall(r"running on .*?\(node (\w+)\)", text))
    assert len(nodes) == 2, nodes  # both machines took members


def test_missing_ray_and_torchrun_experiments_get_clear_messages(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(PicoJepaError, match=re.escape("pip install 'picojepa[ray]'")):
        make_backend("ray")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["experiment", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "--backend ray" in str(result.exception)
