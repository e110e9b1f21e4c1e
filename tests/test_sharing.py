"""Watching and sharing runs: callbacks, best.pt, TensorBoard, `info`, safetensors export and the Hub."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import ROOT, small_run
from test_cli import TINY, assert_one_line_error, run_cli

import pyro_vae
from pyro_vae import Callback
from pyro_vae.training.callbacks import SCALARS, MLflowLogger, TensorBoard

# (a classifying structure, M2, adds val/accuracy; each of the 8 latent coordinates has its KL)
PLAIN_SCALARS = {tag for tag in SCALARS if tag != "val/accuracy"} | {f"collapse/kl_dim_{u:02d}" for u in range(8)}

FIXTURES = Path(__file__).parent / "fixtures"


class EpochRecorder(Callback):
    def __init__(self):
        self.epochs, self.steps, self.ended = [], 0, False

    def on_step_end(self, trainer, epoch, step, loss):
        self.steps += 1

    def on_epoch_end(self, trainer, record):
        self.epochs.append((record["epoch"], record["val_elbo"]))

    def on_run_end(self, trainer):
        self.ended = True


@pytest.fixture(scope="module")
def watched(tmp_path_factory, data_dir):
    """A 3-epoch run with TensorBoard, a fake MLflow and a recording callback, and the same run without them."""
    root = tmp_path_factory.mktemp("watched")
    fake_mlflow = FakeMLflow()
    sys.modules["mlflow"] = fake_mlflow
    try:
        recorder = EpochRecorder()
        callbacks = [TensorBoard(), MLflowLogger(), recorder]
        watched = small_run(root / "watched", data_dir, epochs=3, train_limit=600, callbacks=callbacks)
        watched.fit()
    finally:
        del sys.modules["mlflow"]
    plain = small_run(root / "plain", data_dir, epochs=3, train_limit=600)
    plain.fit()
    return watched, plain, recorder, fake_mlflow


class FakeMLflow(types.ModuleType):
    """Records the calls MLflowLogger makes (the real mlflow is an optional extra, not installed for tests)."""

    def __init__(self):
        super().__init__("mlflow")
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_callbacks_leave_the_weights_bit_identical(watched):
    run, plain, _, _ = watched
    a, b = run.vae.state_dict(), plain.vae.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in ms]  # noqa
    assert strip(run.metrics) == strip(plain.metrics)


def test_a_custom_callback_sees_every_epoch_step_and_the_end(watched):
    run, _, recorder, _ = watched
    assert [e for e, _ in recorder.epochs] == [1, 2, 3] and recorder.ended
    assert [v for _, v in recorder.epochs] == [m["val_elbo"] for m in run.metrics]  # after validation
    assert recorder.steps == 3 * 6  # 600 images in batches of 100


def test_best_pt_is_the_epoch_with_the_best_validation_elbo(watched, tmp_path, data_dir):
    run, _, _, _ = watched
    best = torch.load(run.out_dir / "best.pt", weights_only=True)
    vals = [m["val_elbo"] for m in run.metrics]
    assert best["epoch"] == 1 + vals.index(max(vals))
    # A run whose validation ELBO falls: best.pt stays at the peak while ckpt.pt moves on.
    worse = small_run(tmp_path, data_dir, epochs=3, train_limit=300, lr=0.05)
    worse.fit()
    vals = [m["val_elbo"] for m in worse.metrics]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == 1 + vals.index(max(vals)) and best["metrics"] == worse.metrics[: best["epoch"]]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] == 3


def test_tensorboard_event_file_holds_the_scalars_and_pictures(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, _, _ = watched
    events = EventAccumulator(str(run.out_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) == PLAIN_SCALARS
    assert set(events.Tags()["images"]) == {"reconstructions", "samples"}
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([m["train_loss"] for m in run.metrics])
    assert [e.value for e in events.Scalars("val/elbo")] == pytest.approx([m["val_elbo"] for m in run.metrics])
    information = [m["val_mutual_information"] for m in run.metrics]
    assert [e.value for e in events.Scalars("collapse/mutual_information")] == pytest.approx(information)
    assert [e.value for e in events.Scalars("collapse/kl_dim_07")] == pytest.approx(
        [m["val_kl_per_dim"][7] for m in run.metrics]
    )
    assert len(events.Images("samples")) == 3 and events.Images("samples")[0].width > 100


def test_mlflow_gets_the_config_the_metrics_and_the_files(watched):
    _, _, _, fake = watched
    names = [name for name, _, _ in fake.calls]
    assert names[:2] == ["start_run", "log_params"] and names[-1] == "end_run"
    params = fake.calls[1][1][0]
    assert params["model.latent_dim"] == 8 and params["objective.kind"] == "trace"
    metrics = [(args[0], kwargs["step"]) for name, args, kwargs in fake.calls if name == "log_metrics"]
    assert [step for _, step in metrics] == [1, 2, 3] and set(metrics[0][0]) == {
        t.replace("/", "_") for t in PLAIN_SCALARS
    }
    artifacts = {Path(args[0]).name for name, args, _ in fake.calls if name == "log_artifact"}
    assert {"ckpt.pt", "best.pt", "config.toml", "metrics.jsonl"} <= artifacts


def test_tensorboard_from_the_command_line(tmp_path, data_dir, capsys):
    code, _, err = run_cli(
        ["train", "--data-dir", data_dir, "--out", tmp_path / "r", "--epochs", "1", *TINY, "--tensorboard"], capsys
    )
    assert code == 0, err
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*")) and "TensorBoard logs in" in err
    assert (tmp_path / "r" / "best.pt").is_file()


@pytest.fixture(scope="module")
def exported(watched, tmp_path_factory):
    run, _, _, _ = watched
    out = tmp_path_factory.mktemp("export") / "model"
    pyro_vae.export_checkpoint(run.checkpoint_path, out)
    return run, out


def test_export_writes_safetensors_json_and_a_model_card(exported):
    run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["format"] == "pyro-vae-model" and meta["config"]["model"]["latent_dim"] == 8 and meta["epoch"] == 3
    card = (out / "README.md").read_text()
    assert "standard-normal" in card and "bernoulli" in card and "validation ELBO" in card
    best = max(m["val_elbo"] for m in run.metrics)
    assert f"best {best:.2f} nats per image" in card


def test_an_exported_folder_never_touches_pickle(exported, monkeypatch):
    run, out = exported

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    vae = pyro_vae.load(out, device="cpu")
    state = run.vae.state_dict()
    assert all(torch.equal(vae.state_dict()[k], state[k].cpu()) for k in state)


def test_export_then_load_gives_identical_elbo_json(exported, data_dir, capsys):
    run, out = exported
    args = ["--data-dir", data_dir, "--limit", "300", "--iw-samples", "5", "--json", "--seed", "2"]
    results = []
    for checkpoint in (run.checkpoint_path, out):
        code, printed, err = run_cli(["elbo", "--checkpoint", checkpoint, *args], capsys)
        assert code == 0, err
        results.append(
            {k: v for k, v in json.loads(printed).items() if k not in ("checkpoint", "seconds", "peak_memory_mib")}
        )
    assert results[0] == results[1]
    code, _, err = run_cli(["sample", "--checkpoint", out, "-n", "4", "--out", out.parent / "s.npy"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", out], capsys)
    assert_one_line_error(code, err, "is an exported model (weights only); resume from the run's ckpt.pt")


@pytest.mark.parametrize("kind", ["ckpt", "best", "export", "format 1"])
def test_info_on_every_kind_of_checkpoint(kind, exported, capsys):
    run, out = exported
    path = {
        "ckpt": run.checkpoint_path,
        "best": run.out_dir / "best.pt",
        "export": out,
        "format 1": FIXTURES / "v1_mog_gaussian_fullcov.pt",
    }[kind]
    code, text, err = run_cli(["info", path], capsys)
    assert code == 0, err
    assert "best val ELBO" in text and "versions" in text and "config (pyro-vae train --config" in text
    code, printed, _ = run_cli(["info", path, "--json"], capsys)
    found = json.loads(printed)
    assert found["data_shape"] == [1, 28, 28] and found["parameters"] > 0 and found["size_bytes"] > 0
    assert found["resumable"] == (kind != "export")
    if kind == "format 1":
        assert found["prior"] == "mog(num_components=3)" and found["guide"] == "full-cov"
    else:
        best = max(m["val_elbo"] for m in run.metrics)
        assert found["best_val_elbo"] == pytest.approx(best) and found["prior"] == "standard-normal"


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_weights", "is a folder but not an exported model"),
        ("bad_json", "is not JSON"),
        ("not_ours", "is not a pyro-vae model config"),
        ("bad_weights", "is not a readable safetensors file"),
        ("wrong_shapes", "do not fit the stored architecture"),
    ],
)
def test_damaged_exported_folders_are_one_line_errors(damage, message, exported, tmp_path, capsys):
    _, out = exported
    folder = tmp_path / "damaged"
    shutil.copytree(out, folder)
    if damage == "no_weights":
        (folder / "model.safetensors").unlink()
    elif damage == "bad_json":
        (folder / "config.json").write_text("{not json")
    elif damage == "not_ours":
        (folder / "config.json").write_text('{"model_type": "bert"}')
    elif damage == "bad_weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    else:
        from safetensors.torch import save_file

        save_file({"encoder.net.0.weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    code, _, err = run_cli(["elbo", "--checkpoint", folder, "--limit", "10"], capsys)
    assert_one_line_error(code, err, message)
    assert code == 1


def test_the_hub_up_to_the_network_call(exported, monkeypatch, tmp_path, capsys):
    """export --push-to uploads the three files; --checkpoint hf://OWNER/NAME@REV downloads them."""
    import huggingface_hub

    run, out = exported
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, folder_path, repo_id, allow_patterns):
            calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))

    def fake_download(repo_id, revision, allow_patterns):
        calls.append(("snapshot_download", repo_id, revision, sorted(allow_patterns)))
        return str(out)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    code, printed, err = run_cli(["export", run.checkpoint_path, tmp_path / "m", "--push-to", "me/mnist-vae"], capsys)
    assert code == 0, err
    assert calls[:2] == [
        ("create_repo", "me/mnist-vae", True),
        ("upload_folder", ["README.md", "config.json", "model.safetensors"], "me/mnist-vae"),
    ]
    assert "uploaded to https://huggingface.co/me/mnist-vae" in printed
    code, printed, err = run_cli(["info", "hf://me/mnist-vae@v1", "--json"], capsys)
    assert code == 0, err
    assert calls[2] == ("snapshot_download", "me/mnist-vae", "v1", ["README.md", "config.json", "model.safetensors"])

    def offline(**kwargs):
        raise OSError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    code, _, err = run_cli(["elbo", "--checkpoint", "hf://me/mnist-vae"], capsys)
    assert_one_line_error(code, err, "could not download hf://me/mnist-vae (OSError: Failed to resolve")


def test_custom_callback_example(tmp_path, data_dir):
    run = subprocess.run(
        [
            sys.executable,
            ROOT / "examples" / "custom_callback.py",
            "--data-dir",
            data_dir,
            "--epochs",
            "2",
            "--train-limit",
            "300",
            "--out",
            tmp_path / "cb",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    kl = json.loads(run.stdout.strip().splitlines()[-1])["kl_per_epoch"]
    assert len(kl) == 2 and all(k > 0 for k in kl)
