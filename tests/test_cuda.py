"""The same code on a GPU; every test here skips cleanly without one."""

import pytest
import torch
from conftest import small_run

from pyro_vae import ObjectiveConfig, evaluate, start_run
from pyro_vae.pipeline import evaluate_checkpoint, load_model
from pyro_vae.runtime.devices import resolve_device

# `pytest -m cuda` (benchmarks/gpu.sh) selects these.
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_auto_picks_cuda():
    assert resolve_device("auto").type == "cuda"


def test_train_on_gpu_and_evaluate_on_both_devices(tmp_path, data_dir):
    trainer = small_run(tmp_path, data_dir, epochs=1, train_limit=1000, device="cuda")
    assert trainer.data.images["train"].is_cuda and next(trainer.vae.parameters()).is_cuda
    trainer.fit()
    gpu_result, info = evaluate_checkpoint(trainer.checkpoint_path, data_dir=data_dir, limit=500, device="cuda")
    assert info["device"].startswith("cuda")
    gpu_result.check_agreement()
    cpu_vae, _ = load_model(trainer.checkpoint_path, device="cpu")
    cpu_result, _ = evaluate_checkpoint(trainer.checkpoint_path, data_dir=data_dir, limit=500, device="cpu")
    cpu_result.check_agreement()
    assert abs(cpu_result.summary()["elbo"] - gpu_result.summary()["elbo"]) < 5 * gpu_result.summary()["elbo_stderr"]
    assert evaluate(cpu_vae, trainer.data.images["val"].cpu()[:100], iw_samples=0).elbo.device.type == "cpu"


def test_gpu_checkpoint_resumes_on_cpu(tmp_path, data_dir):
    """The fused-Adam state saved on a GPU continues on the CPU (and its kernels follow the device)."""
    from pyro_vae.pipeline import resume_run

    trainer = small_run(tmp_path, data_dir, epochs=1, train_limit=500, device="cuda")
    trainer.fit()
    resumed = resume_run(trainer.checkpoint_path, epochs=2, data_dir=data_dir, device="cpu", out_dir=tmp_path / "cpu")
    assert all(not s["exp_avg"].is_cuda for s in resumed.optimizer.state.values())
    resumed.fit()
    assert resumed.epoch == 2


def test_fast_svi_matches_stock_svi_on_gpu():
    """Stock SVI with the eager Trace_ELBO (Pyro's JIT cannot trace the float KL weight stock SVI passes on), as
    the CPU test does; FastSVI with the traced step and fused Adam on the GPU."""
    import test_fast_svi as t

    stock, fast = t.make_vae().cuda(), t.make_vae().cuda()
    fast.load_state_dict(stock.state_dict())
    xs = [x.cuda() for x in t.batches(3)]
    stock_losses, _ = t.run_stock(stock, ObjectiveConfig(jit=False).make(), xs)
    fast_losses = t.run_fast(fast, ObjectiveConfig().make(), xs)  # fused Adam on the GPU
    assert fast_losses == pytest.approx(stock_losses, rel=1e-4)
    t.assert_same_weights(stock, fast)


def test_the_compiled_step_on_the_gpu_takes_the_uncompiled_steps(compiling):
    """Inductor's Triton kernels: the loss and weights of the uncompiled step, to float32 rounding (the
    first step's draws, from the GPU's generator, the same)."""
    import test_fast_svi as t

    from pyro_vae.inference.fast_svi import FastSVI, make_adam

    xs = [x.cuda() for x in t.batches(4)]
    runs = {}
    for compile in (False, True):
        vae = t.make_vae().cuda()
        svi = FastSVI(
            vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), compile=compile
        )
        runs[compile] = vae, t.run_fast(vae, None, xs, svi=svi), svi
    assert runs[True][2].compiled is not None, runs[True][2].compile_disabled_reason
    assert runs[True][1][0] == pytest.approx(runs[False][1][0], rel=1e-5)
    assert runs[True][1] == pytest.approx(runs[False][1], rel=1e-4)
    t.assert_same_weights(runs[False][0], runs[True][0])


@pytest.mark.parametrize("compile", [False, True])
def test_a_seeded_run_on_one_gpu_repeats_bit_for_bit(tmp_path, data_dir, compile, monkeypatch):
    """What the README states about reproducibility on CUDA: the same seed, device and settings give the same
    weights, compiled (Triton kernels) or not. (Atomics-based kernels would break this; the MLP uses none.)"""
    if compile:
        monkeypatch.setenv("TORCH_COMPILE_DISABLE", "0")
    weights = []
    for run in ("a", "b"):
        trainer = small_run(tmp_path / run, data_dir, epochs=2, train_limit=1000, device="cuda")
        trainer.fit()
        assert (trainer.svi.compiled is not None) == compile, trainer.svi.compile_disabled_reason
        weights.append({k: v.cpu() for k, v in trainer.vae.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_commands_run_a_cpu_checkpoint_on_the_gpu(trained, data_dir, tmp_path, capsys):
    from test_cli import run_cli

    common = ["--checkpoint", trained.checkpoint_path, "--device", "cuda"]
    code, out, _ = run_cli(["elbo", *common, "--data-dir", data_dir, "--limit", 500, "--iw-samples", 100], capsys)
    assert code == 0 and "device=cuda" in out and "(CUDA tensors)" in out
    code, _, _ = run_cli(
        ["plot", *common, "--data-dir", data_dir, "--out", tmp_path / "p", "--num-points", 200], capsys
    )
    assert code == 0 and (tmp_path / "p" / "latent_scatter.png").is_file()
    assert run_cli(["sample", *common, "-n", 8, "--out", tmp_path / "s.png"], capsys)[0] == 0
    assert run_cli(["encode", *common, "--data-dir", data_dir, "--out", tmp_path / "l.npz"], capsys)[0] == 0


def test_levels_become_the_same_floats_on_the_gpu_as_on_the_cpu():
    """Found on a GPU: ``x.float() / 255`` there multiplies by the reciprocal and puts 126 of the 256 levels one ulp
    off the CPU's, so a streamed run (levels converted on the GPU) drifted from a held one (converted on the CPU)."""
    from pyro_vae.data.images import to_unit

    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    assert torch.equal(to_unit(levels.cuda()).cpu(), to_unit(levels))


def test_streamed_batches_on_the_gpu_are_the_held_ones(tmp_path, data_dir):
    from test_image_data import mnist_subset, write_images

    from pyro_vae import DataConfig, VAEData

    write_images(tmp_path / "train", mnist_subset(data_dir, 230, 0)[0])
    batches = {}
    for stream in (False, True):
        config = DataConfig("folder", val_size=0, root=str(tmp_path), stream=stream, workers=0)
        batches[stream] = list(VAEData(config, device="cuda").train_batches(50, seed=3))
    assert len(batches[True]) == 5 and all(torch.equal(a, b) for a, b in zip(batches[False], batches[True]))


def test_a_streamed_colour_run_on_the_gpu_equals_the_in_memory_one(tmp_path, monkeypatch):
    """The same weights, bit for bit, with cuDNN held to its deterministic algorithms (its default choices may
    add in any order: that is not what this test is about)."""
    from test_image_data import colour_images, tiny_config, write_images

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    write_images(tmp_path / "data" / "train", colour_images(60, 16, 16))
    runs = []
    for stream in (False, True):
        config = tiny_config("folder", tmp_path / "data", binarize="none", val_size=10, stream=stream, workers=1)
        config = config.updated(
            {
                "model.likelihood.name": "logistic-mixture",
                "model.net.kind": "resnet",
                "model.net.channels": [8, 16],
                "optimizer.batch_size": 16,
            }
        )
        trainer = start_run(config, tmp_path / f"run{stream}", device="cuda", progress=False)
        trainer.fit()
        runs.append(trainer)
    held, streamed = runs
    assert all(torch.equal(streamed.vae.state_dict()[k], v) for k, v in held.vae.state_dict().items())
    result, _ = evaluate_checkpoint(streamed.checkpoint_path, split="val", iw_samples=5, device="cuda")
    result.check_agreement()


def test_a_gpu_index_that_does_not_exist_is_one_line(capsys, tmp_path):
    from test_cli import assert_one_line_error, run_cli

    missing = f"cuda:{torch.cuda.device_count()}"
    code, _, err = run_cli(["train", "--device", missing, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "CUDA GPU(s) exist")


def test_a_one_gpu_torchrun_job_trains_what_one_process_trains(tmp_path, data_dir):
    """torchrun with one process per GPU: NCCL, cuda:LOCAL_RANK, and the one-process run's weights."""
    from test_distributed import RUN, assert_same_weights, ok, one_process, torchrun

    args = ["train", "--data-dir", data_dir, *RUN, "--epochs", 1, "--device", "cuda"]
    ok(one_process([*args, "--out", tmp_path / "one"]))
    ok(torchrun([*args, "--out", tmp_path / "job"], nproc=1))
    assert_same_weights(tmp_path / "one" / "ckpt.pt", tmp_path / "job" / "ckpt.pt")
