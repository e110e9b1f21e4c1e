"""Many processes, one run: torchrun jobs on the CPU (Gloo, 127.0.0.1) against one process.

The jobs are real ``torchrun`` launches of the installed command (and of ``python -m pyro_vae``); a job of two
processes must train the weights one process trains (up to float rounding), print the same bounds, write only
from rank 0, stop together when one process fails, and leave a checkpoint that resumes at any world size.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import small_config
from pyro.infer import Trace_ELBO

from pyro_vae import start_run
from pyro_vae.data.vae_data import _bernoulli_rows
from pyro_vae.errors import ConfigError
from pyro_vae.inference.global_noise import GlobalBatchNoise
from pyro_vae.runtime.distributed import SINGLE, Group, current, device_name, join, timeout
from pyro_vae.training.checkpoint import load_checkpoint

SCRIPT = Path(sys.executable).parent / "pyro-vae"
RUN = [
    "--train-limit",
    "1000",
    "--val-size",
    "300",
    "--hidden",
    "64",
    "--latent-dim",
    "8",
    "--batch-size",
    "101",
    "--seed",
    "3",
    "--no-progress",
]
EVAL = ["--limit", "1100", "--batch-size", "250", "--iw-samples", "20", "--json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    args: list[str], nproc: int = 2, launcher: list[str] | None = None, timeout: float = 300, **popen
) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc [launcher] pyro-vae ARGS`` on a free local port."""
    launcher = launcher or ["--master-port", str(free_port())]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        *launcher,
        "--no-python",
        str(SCRIPT),
        *map(str, args),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **popen)


def one_process(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def assert_same_weights(a: Path, b: Path, tol: float = 1e-5) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < tol, f"weights differ by up to {worst}"


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# -- the pieces, in one process ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 101, 128])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rows_split_a_batch_in_rank_order(n, world):
    shares = [Group(rank, world).rows(n) for rank in range(world)]
    assert shares[0].start == 0 and shares[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(shares, shares[1:]))
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_without_a_launcher_a_process_is_a_job_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert join("auto") is SINGLE and current() is SINGLE and not SINGLE.parallel
    with pytest.raises(ConfigError, match="no such rows"):  # an input error inside together() is raised as it is
        with SINGLE.together():
            raise ConfigError("no such rows")


@pytest.mark.parametrize(
    "rank,world,message", [("x", "2", "RANK must be a whole number"), ("2", "2", "do not fit together")]
)
def test_a_garbled_launcher_environment_is_one_line(monkeypatch, rank, world, message):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    with pytest.raises(ConfigError, match=message):
        join("cpu")


def test_each_process_takes_its_own_gpu():
    job = Group(rank=5, world=8, local_rank=1)
    assert device_name("cuda", job) == "cuda:1" and device_name("cuda:0", job) == "cuda:0"
    assert device_name("cpu", job) == "cpu" and device_name("cuda", SINGLE) == "cuda"
    assert device_name("auto", job) == ("cuda:1" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("requested", ["cuda", "auto"])
@pytest.mark.parametrize("world,local", [(1, 0), (2, 1)])
def test_a_job_binds_each_process_to_an_indexed_gpu(monkeypatch, world, local, requested):
    """``--device cuda`` (or ``auto`` with a GPU) under torchrun, a job of one process too (found on a GPU:
    torch.cuda.set_device("cuda") raised "Expected a torch.device with a specified index"; ``auto`` in a job of one
    reached torch.device("auto")): set_device and NCCL get ``cuda:LOCAL_RANK``. The CUDA calls are recorded, not
    made, so this runs without a GPU."""
    import pyro_vae.runtime.distributed as distributed

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(
        distributed.dist,
        "init_process_group",
        lambda backend, **kwargs: calls.append((backend, kwargs.get("device_id"))),
    )
    monkeypatch.setattr(distributed, "current", lambda: Group(world - 1, world, local))
    for name, value in {
        "RANK": world - 1,
        "WORLD_SIZE": world,
        "LOCAL_RANK": local,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": 1,
    }.items():
        monkeypatch.setenv(name, str(value))
    distributed.join(requested)
    assert calls == [("set_device", torch.device("cuda", local)), ("nccl", torch.device("cuda", local))]


def test_a_job_of_one_without_a_gpu_takes_the_cpu(monkeypatch):
    """``--device auto`` (the default) under ``torchrun --nproc-per-node 1`` on a machine without a GPU: Gloo."""
    import pyro_vae.runtime.distributed as distributed

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kwargs: calls.append(backend))
    monkeypatch.setattr(distributed, "current", lambda: SINGLE)
    for name, value in {
        "RANK": 0,
        "WORLD_SIZE": 1,
        "LOCAL_RANK": 0,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": 1,
    }.items():
        monkeypatch.setenv(name, str(value))
    distributed.join("auto")
    assert calls == ["gloo"]


def test_a_job_s_flags_travel_on_the_process_s_device(monkeypatch):
    """NCCL reduces only CUDA tensors: a flag the processes sum (a stop request) goes on the device given, the
    trainer's own (before: always the CPU, which NCCL refuses). The meta device stands in for a GPU here."""
    seen = []

    def fake_sum(self, tensor):
        seen.append(tensor.device)
        return torch.tensor([2.0])

    monkeypatch.setattr(Group, "sum", fake_sum)
    assert Group(0, 2).any(False, torch.device("meta")) and seen == [torch.device("meta")]
    assert Group(0, 2).any(False) and seen[-1] == torch.device("cpu")
    assert SINGLE.any(False, "meta") is False and len(seen) == 2  # one process: no collective


@pytest.mark.parametrize("value,ok_", [("30", True), ("0.5", True), ("0", False), ("soon", False)])
def test_the_collective_timeout_comes_from_the_environment(monkeypatch, value, ok_):
    monkeypatch.setenv("PYRO_VAE_DIST_TIMEOUT", value)
    if ok_:
        assert timeout().total_seconds() == float(value)
    else:
        with pytest.raises(ConfigError, match="PYRO_VAE_DIST_TIMEOUT"):
            timeout()


def test_bernoulli_rows_are_the_rows_of_the_whole_batch():
    p = torch.rand(11, 30)
    whole = torch.bernoulli(p, generator=torch.Generator().manual_seed(5))
    for rows in (slice(0, 6), slice(6, 11), slice(3, 4)):
        part = _bernoulli_rows(p[rows], rows, 11, torch.Generator().manual_seed(5))
        assert torch.equal(part, whole[rows])


@pytest.mark.parametrize("guide", ["diagonal", "full-cov", "iaf", "two layers bottom-up", "two layers ladder"])
@pytest.mark.parametrize("objective,particles", [("trace", 1), ("trace", 3), ("iwae", 4)])
def test_shards_give_the_whole_batch_loss_and_gradients(guide, objective, particles):
    """Each shard's Trace_ELBO with the whole batch's noise: the losses and the gradients add up to the whole's."""
    layers = {"structure": "hierarchical", "latent_dims": (6, 3)} if guide.startswith("two layers") else {}
    guide = {"two layers bottom-up": "diagonal", "two layers ladder": "ladder"}.get(guide, guide)
    config = small_config(".", objective=objective, particles=particles, **layers)
    config = config.updated({"model.guide.name": guide})
    vae, loss = config.build_model(), config.objective.make()
    if objective == "trace":  # eager: the comparison needs no trace per shard
        loss = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    x = torch.rand(10, 784).bernoulli()

    def grads():
        out = torch.cat([p.grad.flatten() for p in vae.parameters() if p.grad is not None])
        vae.zero_grad(set_to_none=True)
        return out

    torch.manual_seed(0)
    whole = loss.loss_and_grads(vae.model, vae.guide, x)
    g_whole = grads()
    parts = 0.0
    for rows in (slice(0, 4), slice(4, 10)):
        torch.manual_seed(0)
        with GlobalBatchNoise(rows, 10):
            parts += loss.loss_and_grads(vae.model, vae.guide, x[rows])
    assert parts == pytest.approx(whole, rel=1e-6)
    assert torch.allclose(grads(), g_whole, atol=1e-4, rtol=1e-4)


# -- jobs ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir):
    """The reference: one process, two epochs (traced step)."""
    out = tmp_path_factory.mktemp("single") / "run"
    ok(one_process(["train", "--data-dir", data_dir, *RUN, "--epochs", 2, "--out", out]))
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory, data_dir):
    """The same run as two processes (torchrun, Gloo)."""
    out = tmp_path_factory.mktemp("pair") / "run"
    result = ok(torchrun(["train", "--data-dir", data_dir, *RUN, "--epochs", 2, "--out", out]))
    return out, result


def test_two_processes_train_what_one_trains(single, pair):
    out, result = pair
    assert_same_weights(single / "ckpt.pt", out / "ckpt.pt")
    one = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one, two, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
        assert b["val_elbo"] == pytest.approx(a["val_elbo"], rel=1e-6)
    # rank 0 speaks for the job: each epoch's line once
    assert result.stderr.count("epoch 2/2") == 1 and "rank 1" not in result.stderr


def test_a_job_runs_the_compiled_step_in_every_process(tmp_path, pair, data_dir):
    """Compiling on: each process compiles its graph (its rows, the whole batch's noise), the all-reduce runs
    between the graph and Adam, and the job trains the uncompiled job's run up to float32 rounding. Each process
    compiles its own (rank 0 counts them for the job's log line)."""
    out = tmp_path / "run"
    result = ok(
        torchrun(
            ["train", "--data-dir", data_dir, *RUN, "--epochs", 2, "--out", out],
            env={**os.environ, "TORCH_COMPILE_DISABLE": "0"},
        )
    )
    assert "compiled the training step" in result.stderr and "(in each of the 2 processes)" in result.stderr
    assert_same_weights(pair[0] / "ckpt.pt", out / "ckpt.pt")  # (measured: 3.9e-8 apart)
    # Negative control: a job that fell back to the traced step would give the uncompiled job's weights exactly.
    assert not all(
        torch.equal(a, b) for a, b in zip(weights(pair[0] / "ckpt.pt").values(), weights(out / "ckpt.pt").values())
    )
    assert "compiled the training step" not in pair[1].stderr  # the reference job is the uncompiled one


def test_sharded_elbo_prints_the_single_process_numbers(pair, data_dir):
    ckpt = pair[0] / "ckpt.pt"
    one = json.loads(ok(one_process(["elbo", "--checkpoint", ckpt, "--data-dir", data_dir, *EVAL])).stdout)
    result = ok(torchrun(["elbo", "--checkpoint", ckpt, "--data-dir", data_dir, *EVAL]))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # printed once, by rank 0
    two = json.loads(lines[0])
    assert two["processes"] == 2
    for key in ("elbo", "elbo_analytic", "iwae", "recon", "kl", "agreement_z", "active_units", "n", "kl_per_dim"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    # I(x;z) over every image, after the gather (per share it would be another number)
    for key in ("mutual_information", "marginal_kl", "mutual_information_images"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key


def test_python_m_and_two_nodes_on_one_host(tmp_path, single, data_dir):
    """``python -m pyro_vae`` under two torchrun "nodes" (one process each) trains the same run; node 1's --out is
    never touched (only rank 0 writes)."""
    port = free_port()
    outs = [tmp_path / "node0", tmp_path / "node1"]
    procs = []
    for node, out in enumerate(outs):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--node-rank",
            str(node),
            "--nproc-per-node",
            "1",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "-m",
            "pyro_vae",
            "train",
            "--data-dir",
            str(data_dir),
            *RUN,
            "--epochs",
            "2",
            "--out",
            str(out),
        ]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert_same_weights(single / "ckpt.pt", outs[0] / "ckpt.pt")
    assert not outs[1].exists()


def test_eager_step_through_the_python_api(tmp_path, data_dir):
    """A process group started by the caller (spawned here): the same Trainer, eager Trace_ELBO, uneven shards, each
    process reading only its rows from disk (streamed) against one process holding them all; a batch smaller than
    the job is refused on every process."""
    config = small_config(data_dir, epochs=1, train_limit=450, jit=False, batch_size=101)
    alone = start_run(config, tmp_path / "alone", device="cpu", progress=False)
    alone.fit()
    port = free_port()
    mp.start_processes(
        _train_in_group,
        args=(2, port, config.to_dict(), str(tmp_path / "pair")),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    assert_same_weights(tmp_path / "alone" / "ckpt.pt", tmp_path / "pair" / "ckpt.pt")


def _train_in_group(rank: int, world: int, port: int, table: dict, out: str) -> None:
    import torch.distributed as dist

    from pyro_vae import RunConfig
    from pyro_vae.errors import DataError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        config = RunConfig.from_dict(table)
        with pytest.raises(DataError, match="2 processes need a batch of at least 2 images"):
            start_run(config.updated({"optimizer.batch_size": 1}), out, device="cpu", progress=False)
        trainer = start_run(config.updated({"data.stream": True, "data.workers": 0}), out, device="cpu", progress=False)
        assert trainer.group.world == world and trainer.group.rank == rank
        trainer.fit()
    finally:
        dist.destroy_process_group()


def test_a_checkpoint_of_two_processes_resumes_on_one(tmp_path, pair, data_dir):
    out = tmp_path / "run"
    ok(torchrun(["train", "--data-dir", data_dir, *RUN, "--epochs", 1, "--out", out]))
    ok(one_process(["train", "--resume", out / "ckpt.pt", "--epochs", 2, "--data-dir", data_dir, "--no-progress"]))
    assert_same_weights(pair[0] / "ckpt.pt", out / "ckpt.pt")


def test_an_input_error_on_one_node_stops_the_job(tmp_path, data_dir):
    """Node 1 is pointed at a folder without the data: both nodes exit non-zero at once, rank 0 saying why."""
    port = free_port()
    procs = []
    for node, data in enumerate([data_dir, tmp_path / "nothing-here"]):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--node-rank",
            str(node),
            "--nproc-per-node",
            "1",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--no-python",
            str(SCRIPT),
            "train",
            "--data-dir",
            str(data),
            *RUN,
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode != 0 for proc in procs] == [True, True]
    said = [line for line in errors[0].splitlines() if line.startswith("pyro-vae: error:")]
    assert len(said) == 1 and said[0].startswith("pyro-vae: error: rank 0: rank 1: ") and "nothing-here" in said[0]
    assert "Traceback" not in errors[0].split("pyro-vae: error:")[0]
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def long_job(out: Path, data_dir) -> subprocess.Popen:
    """A 2-process training job of 100 epochs, returned once its first checkpoint is on disk."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "--no-python",
        str(SCRIPT),
        "train",
        "--data-dir",
        str(data_dir),
        *RUN,
        "--train-limit",
        "4000",
        "--epochs",
        "100",
        "--out",
        str(out),
    ]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "ckpt.pt").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (out / "ckpt.pt").exists(), job.communicate()[1][-3000:]
    return job


def test_a_killed_process_ends_the_job_and_the_checkpoint_resumes(tmp_path, data_dir):
    out = tmp_path / "run"
    job = long_job(out, data_dir)
    workers = [
        int(pid) for pid in subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    ]
    victim = next(pid for pid in workers if _rank(pid) == 1)
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0 and time.monotonic() - start < 60
    assert f"rank 1 (pid {victim}) died" in err and f"pyro-vae train --resume {out / 'ckpt.pt'}" in err
    epoch = load_checkpoint(out / "ckpt.pt")["epoch"]
    assert 1 <= epoch < 100
    ok(
        one_process(
            ["train", "--resume", out / "ckpt.pt", "--epochs", epoch + 1, "--data-dir", data_dir, "--no-progress"]
        )
    )
    assert load_checkpoint(out / "ckpt.pt")["epoch"] == epoch + 1


def _rank(pid: int) -> int | None:
    try:
        variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in variables if v.startswith(b"RANK=")), None)


def test_sigterm_stops_every_process_at_the_same_step(tmp_path, data_dir):
    """torchrun hands SIGTERM to each worker at its own moment; they stop after the same step, rank 0 saving it."""
    out = tmp_path / "run"
    job = long_job(out, data_dir)
    time.sleep(0.3)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    said = sorted(line.split(": ", 3)[3] for line in err.splitlines() if line.startswith("pyro-vae: error: rank"))
    assert len(said) == 2 and said[0] == said[1] and said[0].startswith("stopped by SIGTERM"), err[-3000:]
    partial = load_checkpoint(out / "ckpt.pt")["partial_epoch"]
    where = said[0].split(" at ")[1].split(";")[0] if " at epoch" in said[0] else None
    assert partial is None or where == f"epoch {partial['epoch']}, step {partial['step']}"


def test_processes_on_one_machine_download_one_at_a_time(tmp_path):
    """While one reader may download into a data folder, a second waits for it (then finds the files there)."""
    import threading

    from pyro_vae.data.sources import _one_downloader

    order = []
    second_in = threading.Event()

    def second():
        with _one_downloader(tmp_path):
            order.append("second")
            second_in.set()

    with _one_downloader(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        assert not second_in.wait(0.5)  # blocked while the first holds the folder
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second"]
