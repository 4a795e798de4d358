"""Shared fixtures: tiny town files and tiny synthetic datasets written by the real recorder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from carla_capture.config import CaptureConfig, default_town_dir
from carla_capture.record import record


def write_towns(folder: Path, width: int, height: int) -> Path:
    """Copy the packaged town files into ``folder`` with a ``width`` x ``height`` camera."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in default_town_dir().glob("Town*.toml"):
        text = src.read_text()
        text = re.sub(r"(?m)^width = \d+", f"width = {width}", text)
        text = re.sub(r"(?m)^height = \d+", f"height = {height}", text)
        (folder / src.name).write_text(text)
    return folder


@pytest.fixture(scope="session")
def tiny_towns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Town files with a 96 x 48 camera: fast to render, enough pixels to check."""
    return write_towns(tmp_path_factory.mktemp("towns-tiny"), 96, 48)


@pytest.fixture(scope="session")
def small_towns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Town files with a 256 x 128 camera, for geometry checks that need pixels."""
    return write_towns(tmp_path_factory.mktemp("towns-small"), 256, 128)


@pytest.fixture(scope="session")
def towns_of_size(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``towns_of_size(width, height)``: the packaged town files with that camera size."""

    def make(width: int, height: int) -> Path:
        return write_towns(tmp_path_factory.mktemp(f"towns-{width}x{height}"), width, height)

    return make


def make_synthetic_config(out: Path, town_dir: Path, **overrides: object) -> CaptureConfig:
    """A synthetic-backend capture config writing to ``out`` with tiny towns."""
    values = {
        "backend": "synthetic",
        "town": "Town01",
        "clips": 2,
        "frames": 6,
        "out": out,
        "clips_per_shard": 2,
        "town_dir": town_dir,
    }
    values.update(overrides)
    return CaptureConfig(**values)


@pytest.fixture
def synthetic_config():  # noqa: ANN201
    """``synthetic_config(out, town_dir, **fields)``: a synthetic-backend CaptureConfig (2 clips of
    6 frames)."""
    return make_synthetic_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_towns: Path) -> Path:
    """A dataset of 3 towns (train Town01 x3 clips, val Town10HD x1, test Town02 x1), 6 frames
    each."""
    out = tmp_path_factory.mktemp("dataset")
    for town, clips in (("Town01", 3), ("Town10HD", 1), ("Town02", 1)):
        record(make_synthetic_config(out, tiny_towns, town=town, clips=clips))
    return out


@pytest.fixture(scope="session")
def split_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """``tiny_dataset`` copied with its split manifest written (read-only for tests)."""
    import shutil

    from carla_capture.split import build_manifest, load_splits, write_manifest

    out = tmp_path_factory.mktemp("split") / "data"
    shutil.copytree(tiny_dataset, out)
    write_manifest(out, build_manifest(out, load_splits()))
    return out


def invoke(main, *args: str):  # noqa: ANN001, ANN201 - a click group and click's Result
    """Run a click command in-process (stdout and stderr apart)."""
    from click.testing import CliRunner

    return CliRunner().invoke(main, [str(a) for a in args])


#: How the lines of progress and warnings a command prints before its error begin.
PROGRESS = ("recording", "verifying", "scoring", "predicting", "warning")


def one_line_error(result, *needles: str) -> str:  # noqa: ANN001 - click's Result
    """Assert exit 2, a single ``error: ...`` line with every needle on stderr, and no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cli():  # noqa: ANN201
    """``cli.capture(*args)`` and ``cli.train(*args)`` run the installed ``capture`` and ``train``
    commands in-process; ``cli.error(result, *needles)`` asserts a one-line error."""
    from types import SimpleNamespace

    from carla_capture.cli import main as capture_main
    from carla_temporal.cli import main as train_main

    return SimpleNamespace(
        capture=lambda *a: invoke(capture_main, *a),
        train=lambda *a: invoke(train_main, *a),
        error=one_line_error,
    )


@pytest.fixture
def small_disk(tmp_path: Path):  # noqa: ANN201
    """A 1 MiB tmpfs (a disk that fills up); skipped where mounting is not allowed (not root)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_copy(tmp_path: Path):  # noqa: ANN201
    """``read_only_copy(folder)``: a copy of ``folder`` on a read-only file system (a tmpfs
    remounted read-only); skipped where mounting is not allowed (not root)."""
    import shutil
    import subprocess

    mounts: list[Path] = []

    def copy(folder: Path) -> Path:
        mount = tmp_path / f"ro{len(mounts)}"
        mount.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(mount)
        shutil.copytree(folder, mount / "data")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        return mount / "data"

    yield copy
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def fill_disk():  # noqa: ANN201
    """``fill_disk(folder)`` writes a filler file until the file system holding ``folder`` is
    full."""

    def fill(folder: Path) -> None:
        with open(folder / "filler", "wb", buffering=0) as fh:  # unbuffered: close cannot fail
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass

    return fill


#: Two steps of batch 2 per stage: the tiny run every training test starts from.
FAST_STAGES = [
    f"stages.stage{i}.{k}={v}"
    for i in range(1, 5)
    for k, v in (("epochs", 1), ("max_steps", 2), ("batch_size", 2))
]


#: What every tiny test run shares: CPU, no TensorBoard.
CPU = ["tensorboard=false", 'device="cpu"']


def make_tiny_config(data: Path, out: Path, *extra: str):  # noqa: ANN201
    """The tiny preset at 64x128, 2 steps of batch 2 per stage, CPU, no TensorBoard."""
    from train.pipeline.run import resolve_config

    return resolve_config(
        "tiny",
        {"data": data, "out": out},
        None,
        [*FAST_STAGES, "data.size=[64, 128]", *CPU, *extra],
    )


@pytest.fixture(scope="session")
def tiny_config():  # noqa: ANN201
    """``tiny_config(data, out, *set_overrides)``: see :func:`make_tiny_config`."""
    return make_tiny_config


#: A forecaster of 2 input frames for 6-frame clips, one step of batch 2, 8 channels wide.
FAST_FORECAST = [
    'forecast.horizons={"tiny": {"inputs": [1, 3], "target": 5}}',
    'forecast.horizon="tiny"',
    "forecast.epochs=1",
    "forecast.max_steps=1",
    "forecast.batch_size=2",
    "forecast.width=8",
]


@pytest.fixture(scope="session")
def forecast_config():  # noqa: ANN201
    """``forecast_config(data, out, *set_overrides)``: the tiny forecaster of a tiny run
    (:data:`FAST_FORECAST`, 64x128, CPU, no TensorBoard)."""
    from train.forecast.stage import resolve_config

    def make(data: Path, out: Path, *extra: str):  # noqa: ANN202
        sets = [*FAST_FORECAST, "data.size=[64, 128]", *CPU, *extra]
        return resolve_config("tiny", {"data": data, "out": out}, None, sets)

    return make


#: The sim2real stages at 32x64, 2 steps of batch 2 each.
FAST_SIM2REAL = [
    "model.input_size=[32, 64]",
    *(
        f"stages.{s}.{k}={v}"
        for s in ("sim2real-vae", "sim2real-tasks")
        for k, v in (("epochs", 1), ("max_steps", 2), ("batch_size", 2))
    ),
]


@pytest.fixture(scope="session")
def sim2real_sets() -> list[str]:
    """:data:`FAST_SIM2REAL`, the ``--set`` overrides of a tiny twin VAE."""
    return list(FAST_SIM2REAL)


@pytest.fixture(scope="session")
def sim2real_config():  # noqa: ANN201
    """``sim2real_config(data, target, out, *set_overrides)``: the tiny twin VAE
    (:data:`FAST_SIM2REAL`, CPU, no TensorBoard)."""
    from train.sim2real.stage import resolve_config

    def make(data: Path, target: Path | None, out: Path, *extra: str):  # noqa: ANN202
        options = {"data": data, "target": target, "out": out}
        return resolve_config("tiny", options, None, [*FAST_SIM2REAL, *CPU, *extra])

    return make


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, split_dataset: Path) -> Path:
    """A tiny run trained through all four stages once per session by ``train run pipeline``
    (the config of :func:`make_tiny_config`: 64x128, 2 steps a stage)."""
    from carla_temporal.cli import main

    out = tmp_path_factory.mktemp("run")
    sets = [a for item in (*FAST_STAGES, "data.size=[64, 128]", *CPU) for a in ("--set", item)]
    result = invoke(main, "run", "pipeline", "--data", split_dataset, "--out", out, *sets)
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.count("best checkpoint") == 4
    return out


def _slurm_unavailable(reason: str) -> None:
    """Skip where SLURM cannot run here; in CI (.ci/run installs it) a failure instead."""
    if os.environ.get("CI"):
        pytest.fail(f"the single-node SLURM cluster did not start in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A real single-node SLURM cluster (Debian's slurmctld, slurmd, munge) of this machine, with
    its own munge key and socket and free ports, so it leaves any other SLURM or munge alone:
    ``.env`` holds ``SLURM_CONF`` for sbatch. Skipped (with the reason) where the packages are
    missing or it cannot start (not root); ``.ci/run`` installs them."""
    import shutil
    import socket
    import subprocess
    import time
    from types import SimpleNamespace

    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(b)]
    if missing:
        _slurm_unavailable(
            f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurmctld "
            "slurmd munge slurm-client (.ci/run does)"
        )
    if os.geteuid() != 0:
        _slurm_unavailable("a single-node SLURM cluster runs slurmd as root; run the tests as root")
    d = tmp_path_factory.mktemp("slurm")
    d.chmod(0o700)
    for sub in ("state", "spool", "log", "munge"):
        (d / sub).mkdir()
    key = d / "munge" / "key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("", 0))
            ports.append(sock.getsockname()[1])
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    conf = d / "slurm.conf"
    conf.write_text(
        f"""ClusterName=citest
SlurmctldHost={host}
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/sock
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/ctld.log
SlurmdLogFile={d}/log/d.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = d / "munge"
    started = [
        ["munged", "--force", f"--socket={munge}/sock", f"--key-file={key}",
         f"--pid-file={munge}/pid", f"--log-file={munge}/log", f"--seed-file={munge}/seed"],
        ["slurmctld", "-f", str(conf)],
        ["slurmd", "-f", str(conf)],
    ]  # fmt: skip
    pid_files = [munge / "pid", d / "slurmctld.pid", d / "slurmd.pid"]

    def stop() -> None:
        for pid_file in reversed(pid_files):
            try:
                os.kill(int(pid_file.read_text().split()[0]), 15)
            except (OSError, ValueError):
                pass

    try:
        for cmd in started:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                _slurm_unavailable(f"{cmd[0]} did not start: {done.stderr.strip()[-300:]}")
            time.sleep(0.5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
            )
            if info.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            logs = " ".join(p.read_text()[-300:] for p in (d / "log").glob("*.log"))
            _slurm_unavailable(f"the SLURM node did not become idle within 60 s: {logs}")
        yield SimpleNamespace(env=env, dir=d)
    finally:
        stop()
