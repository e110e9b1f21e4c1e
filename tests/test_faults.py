"""No fault loses a run: one writer per folder, signals, a full disk, NaN gradients, kill -9 at any moment."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import small_run
from helper_components import PoisonableBernoulli
from test_cli import assert_one_line_error, run_cli

from pyro_vae.errors import RunInterrupted, RunInUseError, TrainingError
from pyro_vae.pipeline import resume_run

SCRIPT = Path(sys.executable).with_name("pyro-vae")


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- one writer per run folder ----------------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys, time
f = open(os.path.join(sys.argv[1], ".lock"), "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.truncate(0); f.write(f"{os.getpid()}\\n"); f.flush()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_trainer_on_the_same_folder_is_refused(trained, data_dir, capsys):
    run = trained.out_dir
    before, metrics = (run / "ckpt.pt").read_bytes(), (run / "metrics.jsonl").read_text()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in (["--overwrite"], ["--resume", run / "ckpt.pt", "--epochs", "3"]):
            args = ["train", "--data-dir", data_dir, "--out", run, "--no-progress", *extra]
            code, _, err = run_cli(args if "--resume" in extra else [*args, "--train-limit", "300"], capsys)
            assert_one_line_error(code, err, f"{run} is in use by another run (pid {holder.pid})")
        assert (run / "ckpt.pt").read_bytes() == before and (run / "metrics.jsonl").read_text() == metrics
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking: the kernel released its lock, and the folder is usable again.
    resumed = resume_run(run / "ckpt.pt", epochs=2, data_dir=data_dir, device="cpu", progress=False)
    resumed.lock.release()


def test_two_trainers_in_one_process_cannot_share_a_folder(tmp_path, data_dir):
    first = small_run(tmp_path, data_dir, epochs=1, train_limit=300)
    with pytest.raises(RunInUseError, match=f"pid {os.getpid()}"):
        small_run(tmp_path, data_dir, epochs=1, train_limit=300)
    first.fit()  # fit releases the lock when it ends
    resume_run(first.checkpoint_path, data_dir=data_dir, device="cpu").lock.release()


# --- signals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_epoch_saves_the_step_and_resumes_exactly(sig, code, tmp_path, data_dir):
    full = small_run(tmp_path / "full", data_dir, epochs=3, train_limit=800)
    full.fit()
    part = small_run(tmp_path / "part", data_dir, epochs=3, train_limit=800)
    step = part.svi.step
    calls = []

    def step_then_signal(*args):
        calls.append(1)
        if len(calls) == 11:  # epoch 2 (8 steps an epoch), step 3: the signal arrives during the step
            os.kill(os.getpid(), sig)
        return step(*args)

    part.svi.step = step_then_signal
    with pytest.raises(RunInterrupted, match="at epoch 2, step 3") as exc:
        part.fit()
    assert exc.value.exit_code == code and "--resume" in str(exc.value)
    ckpt = torch.load(part.checkpoint_path, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["partial_epoch"]["step"] == 3
    assert _epochs(tmp_path / "part") == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = resume_run(part.checkpoint_path, data_dir=data_dir, device="cpu", progress=False)
    resumed.fit()
    _assert_same_weights(full.vae.state_dict(), resumed.vae.state_dict())
    assert [m["train_loss"] for m in resumed.metrics] == [m["train_loss"] for m in full.metrics]
    assert _epochs(tmp_path / "part") == [1, 2, 3]


def test_ctrl_c_in_a_real_process_exits_130_with_one_line(tmp_path, data_dir):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            SCRIPT,
            "train",
            "--data-dir",
            data_dir,
            "--out",
            run,
            "--train-limit",
            "3000",
            "--val-size",
            "200",
            "--hidden",
            "32",
            "--latent-dim",
            "4",
            "--batch-size",
            "10",
            "--epochs",
            "50",
            "--no-progress",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "ckpt.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pyro-vae: error: stopped by SIGINT") and f"--resume {run / 'ckpt.pt'}" in last
    assert "Traceback" not in err
    epoch = torch.load(run / "ckpt.pt", weights_only=True)["epoch"]
    assert _epochs(run) == list(range(1, epoch + 1))


# --- a full disk, non-finite values -----------------------------------------------------------------------


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, data_dir, monkeypatch, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "--data-dir",
        data_dir,
        "--out",
        run,
        "--train-limit",
        "300",
        "--val-size",
        "100",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--no-progress",
    ]
    code, _, err = run_cli([*args, "--epochs", "1"], capsys)
    assert code == 0, err
    before = (run / "ckpt.pt").read_bytes()

    def no_space(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")  # what a write cut short leaves in the temporary file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    code, _, err = run_cli(
        ["train", "--resume", run / "ckpt.pt", "--epochs", "2", "--data-dir", data_dir, "--no-progress"], capsys
    )
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("pyro-vae: error: ")]
    assert errors == [err.strip().splitlines()[-1]] and "No space left on device" in errors[0]
    assert (run / "ckpt.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.pt", "ckpt.pt", "config.toml", "metrics.jsonl"]
    assert _epochs(run) == [1]


@pytest.mark.parametrize("poison, message", [("gradient", "a gradient became NaN"), ("loss", "the loss became nan")])
def test_a_non_finite_gradient_or_loss_stops_before_the_update(poison, message, tmp_path, data_dir):
    trainer = small_run(tmp_path, data_dir, epochs=1, train_limit=300, likelihood=PoisonableBernoulli(), jit=False)
    trainer.fit()
    saved = torch.load(trainer.checkpoint_path, weights_only=True)
    trainer.vae.likelihood.poison = poison
    trainer.config.schedule.epochs = 2
    before = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingError, match=message) as exc:
            trainer.fit()
    assert "at epoch 2, step 1" in str(exc.value) and "is kept" in str(exc.value)
    if poison == "gradient":
        assert "in encoder$$$net.0.weight" in str(exc.value)  # names the parameters
    assert not [w for w in caught if "Encountered NaN" in str(w.message)]  # Pyro's warning stays quiet
    _assert_same_weights(before, trainer.vae.state_dict())  # the bad step was never applied
    assert torch.load(trainer.checkpoint_path, weights_only=True)["epoch"] == saved["epoch"] == 1
    assert _epochs(tmp_path) == [1]


# --- kill -9 at random moments ----------------------------------------------------------------------------

KILL_RUN = [
    "--train-limit",
    "1000",
    "--val-size",
    "200",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "100",
    "--epochs",
    "80",
    "--seed",
    "3",
    "--no-progress",
]


def _wait_then_kill(proc, run: Path, mode: str, rng: random.Random, stale: set) -> str:
    """Kill ``proc`` with SIGKILL: at a random moment from its start, before its first checkpoint ("early"), a
    random moment after its next checkpoint ("later"), or as soon as a checkpoint write is under way ("save").
    Returns "save" whenever the kill landed inside a write (a temporary file of this process's exists). (An early
    kill waits at most for one checkpoint: on a fast machine 4 s would otherwise be 35 of the run's epochs.)"""
    deadline = time.monotonic() + 120
    ckpt = run / "ckpt.pt"
    writing = lambda: set(run.glob(".ckpt.*.tmp.pt")) - stale  # noqa: E731 (a killed writer's are stale)
    start = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
    if mode == "early":
        until = time.monotonic() + rng.uniform(0.0, 4.0)
        while proc.poll() is None and time.monotonic() < until:
            if ckpt.exists() and ckpt.stat().st_mtime_ns != start:
                break
            time.sleep(0.005)
    elif mode == "later":
        while proc.poll() is None and time.monotonic() < deadline:
            if ckpt.exists() and ckpt.stat().st_mtime_ns != start:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
    else:
        while proc.poll() is None and time.monotonic() < deadline and not writing():
            time.sleep(0.0005)
    in_save = bool(writing())
    proc.kill()
    proc.wait()
    return "save" if in_save else mode


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, data_dir):
    """Every process with the same fixed thread count: on some CPUs (seen on an AVX-512 Xeon) torch's kernels split
    their sums by the thread count, and --threads auto would size it to the load of the moment."""
    reference = tmp_path / "reference"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [SCRIPT, "train", "--data-dir", data_dir, "--out", reference, *KILL_RUN],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    run, rng, kills = tmp_path / "killed", random.Random(13), []
    modes = ["early", "later", "save"] * 6
    while len(kills) < len(modes):
        resume = (run / "ckpt.pt").exists()
        args = ["--resume", run / "ckpt.pt"] if resume else ["--out", run, *KILL_RUN]
        stale = set(run.glob(".ckpt.*.tmp.pt"))
        proc = subprocess.Popen([SCRIPT, "train", "--data-dir", data_dir, *args], stderr=subprocess.DEVNULL, env=env)
        kills.append(_wait_then_kill(proc, run, modes[len(kills)], rng, stale))
        assert proc.returncode != 0, f"the run finished before kill {len(kills)}; make it longer"
        if (run / "ckpt.pt").exists():  # the file on disk is always a whole checkpoint, and the metrics agree
            epoch = torch.load(run / "ckpt.pt", weights_only=True)["epoch"]
            assert _epochs(run)[:epoch] == list(range(1, epoch + 1))
    print(
        f"\nkill test: {len(kills)} SIGKILLs, {kills.count('save')} inside a checkpoint write, "
        f"{kills.count('early')} from start, {kills.count('later')} after a checkpoint"
    )
    assert kills.count("save") >= 3, kills  # killed inside a checkpoint write
    args = ["--resume", run / "ckpt.pt"] if (run / "ckpt.pt").exists() else ["--out", run, *KILL_RUN]
    final = subprocess.run(
        [SCRIPT, "train", "--data-dir", data_dir, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert final.returncode == 0, final.stderr
    _assert_same_weights(
        torch.load(reference / "ckpt.pt", weights_only=True)["model_state"],
        torch.load(run / "ckpt.pt", weights_only=True)["model_state"],
    )
    assert _epochs(run) == list(range(1, 81))
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.pt", "ckpt.pt", "config.toml", "metrics.jsonl"]


def test_resume_finds_the_recorded_data_folder(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(
        [
            "train",
            "--data-dir",
            data_dir,
            "--out",
            run,
            "--train-limit",
            "300",
            "--val-size",
            "100",
            "--hidden",
            "16",
            "--latent-dim",
            "2",
            "--epochs",
            "1",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert torch.load(run / "ckpt.pt", weights_only=True)["config"]["data"]["root"] == str(Path(data_dir).resolve())
    code, _, err = run_cli(["train", "--resume", run / "ckpt.pt", "--epochs", "2", "--no-progress"], capsys)
    assert code == 0, err
    assert _epochs(run) == [1, 2]
    code, out, err = run_cli(
        ["elbo", "--checkpoint", run / "ckpt.pt", "--limit", "20", "--iw-samples", "0", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["n"] == 20
