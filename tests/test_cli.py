"""The ``pyro-vae`` command: a working round trip, and one-line errors for bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helper_components import WrongKLPrior

from pyro_vae.cli.main import main
from pyro_vae.training.checkpoint import vae_from_config
from conftest import small_run

TINY = ["--train-limit", "500", "--val-size", "200", "--hidden", "32", "--latent-dim", "4", "--batch-size", "100",
        "--no-progress"]  # fmt: skip
SCRIPT = Path(sys.executable).with_name("pyro-vae")


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def assert_one_line_error(code, err, match=None):
    assert code not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error: "), err
    assert "Traceback" not in err
    if match:
        assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data-dir", str(data_dir), "--epochs", "1", "--out", str(out), *TINY])
    assert exc.value.code == 0
    return out


def test_train_then_elbo_json(cli_run, data_dir, capsys):
    assert (cli_run / "ckpt.pt").is_file() and (cli_run / "metrics.jsonl").is_file()
    code, out, err = run_cli(["elbo", "--checkpoint", cli_run / "ckpt.pt", "--data-dir", data_dir, "--json",
                              "--limit", "400", "--iw-samples", "20"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    for key in ("split", "n", "elbo", "elbo_stderr", "elbo_analytic", "elbo_analytic_stderr", "agreement_z",
                "recon", "kl", "iwae", "iwae_k", "dataset", "binarize"):  # fmt: skip
        assert key in result, key
    assert result["split"] == "test" and result["n"] == 400 and result["iwae_k"] == 20
    assert result["elbo"] < 0 and result["recon"] < 0 < result["kl"]
    assert abs(result["agreement_z"]) < 4
    assert result["iwae"] > result["elbo"]
    assert result["elbo_analytic"] == pytest.approx(result["recon"] - result["kl"])


def test_elbo_table_and_json_agree_for_the_same_seed(cli_run, data_dir, capsys):
    args = ["elbo", "--checkpoint", cli_run / "ckpt.pt", "--data-dir", data_dir, "--limit", "200",
            "--split", "val", "--iw-samples", "5", "--seed", "3"]  # fmt: skip
    code, table, _ = run_cli(args, capsys)
    assert code == 0
    code, out, _ = run_cli([*args, "--json"], capsys)
    result = json.loads(out)
    assert f"{result['elbo']:10.3f}" in table and "agreement z" in table and "IWAE bound, K=5" in table


def test_resume_from_the_cli(cli_run, tmp_path, data_dir, capsys):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes((cli_run / "ckpt.pt").read_bytes())
    code, _, err = run_cli(["train", "--resume", ckpt, "--epochs", "2", "--data-dir", data_dir, "--no-progress"],
                           capsys)  # fmt: skip
    assert code == 0, err
    assert "resuming" in err
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    code, _, err = run_cli(["train", "--resume", ckpt, "--latent-dim", "5", "--data-dir", data_dir], capsys)
    assert_one_line_error(code, err, "--latent-dim cannot change on --resume")


def _corrupt_checkpoints(tmp_path, cli_run):
    real = (cli_run / "ckpt.pt").read_bytes()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    text = tmp_path / "text.pt"
    text.write_text("junk\n")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(real[: len(real) // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(3)}, foreign)
    missing_module = tmp_path / "missing_module.pt"
    ckpt = torch.load(cli_run / "ckpt.pt", weights_only=True)
    ckpt["config"]["model"]["prior"]["target"] = "no_such_module:MyPrior"
    torch.save(ckpt, missing_module)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in ckpt.items() if k != "model_state"}, incomplete)
    return {"garbage": (garbage, "not a readable checkpoint"), "text": (text, "not a readable checkpoint"),
            "incomplete": (incomplete, "missing model_state"), "truncated": (truncated, "not a readable checkpoint"),
            "foreign": (foreign, "not a pyro-vae checkpoint"),
            "missing_module": (missing_module, "--trust-module no_such_module"),
            "missing": (tmp_path / "nope.pt", "no checkpoint file")}  # fmt: skip


@pytest.mark.parametrize("kind", ["garbage", "text", "truncated", "foreign", "incomplete", "missing_module", "missing"])
def test_bad_checkpoints(kind, cli_run, tmp_path, data_dir, capsys):
    path, message = _corrupt_checkpoints(tmp_path, cli_run)[kind]
    code, _, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir], capsys)
    assert_one_line_error(code, err, message)


BAD_TRAIN_OPTIONS = {
    "unknown likelihood": (["--likelihood", "poisson"], "Invalid value for '--likelihood'"),
    "zero epochs": (["--epochs", "0"], "--epochs"),
    "negative batch": (["--batch-size", "-5"], "--batch-size"),
    "zero latent": (["--latent-dim", "0"], "--latent-dim"),
    "zero hidden": (["--hidden", "0"], "hidden sizes must be positive"),
    "junk hidden": (["--hidden", "4x"], "not a comma-separated list"),
    "zero lr": (["--lr", "0"], "--lr"),
    "bernoulli on grey": (["--binarize", "none"], "needs binary pixels"),
    "sigma on bernoulli": (["--learn-sigma"], "--learn-sigma only applies"),
    "bad device": (["--device", "tpu"], "device"),
    "components on standard normal": (["--prior-components", "5"], "--prior-components only applies to --prior mog or vamp"),
    "flow steps unused": (["--flow-steps", "3"], "--flow-steps only applies"),
    "spline without flow": (["--flow-transform", "spline"], "--flow-transform only applies"),
    "vamp with iaf": (["--prior", "vamp", "--guide", "iaf"], "use --guide diagonal or full-cov"),
    "sigma on beta": (["--likelihood", "beta", "--binarize", "none", "--sigma", "0.2"], "--sigma only applies"),
    "beta with iwae": (["--objective", "iwae", "--beta", "2"], "--beta and --warmup-epochs apply"),
    "warmup with iwae": (["--objective", "iwae", "--warmup-epochs", "2"], "--beta and --warmup-epochs apply"),
    "warmup start alone": (["--warmup-start", "0.1"], "--warmup-start needs --warmup-epochs"),
    "warmup start above beta": (["--warmup-epochs", "1", "--warmup-start", "2"], "warm-up start <= beta"),
    "zero beta": (["--beta", "0"], "--beta"),
    "zero particles": (["--particles", "0"], "--particles"),
    "unknown guide": (["--guide", "planar"], "Invalid value for '--guide'"),
}


@pytest.mark.parametrize("case", BAD_TRAIN_OPTIONS)
def test_bad_train_options(case, tmp_path, data_dir, capsys):
    extra, message = BAD_TRAIN_OPTIONS[case]
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--out", tmp_path / "r", *TINY, *extra], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "r" / "ckpt.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_one_line_error(tmp_path, data_dir, capsys):
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--out", tmp_path, "--device", "cuda", *TINY], capsys)
    assert_one_line_error(code, err, "no CUDA GPU is available")


def test_wrong_data_dir(tmp_path, capsys):
    code, _, err = run_cli(["train", "--data-dir", tmp_path, "--out", tmp_path / "r", *TINY], capsys)
    assert_one_line_error(code, err, "no MNIST dataset under")


def test_existing_run_is_not_overwritten(cli_run, data_dir, capsys):
    before = (cli_run / "ckpt.pt").read_bytes()
    metrics = (cli_run / "metrics.jsonl").read_text()
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--out", cli_run, *TINY], capsys)
    assert_one_line_error(code, err, "already holds a run")
    assert (cli_run / "ckpt.pt").read_bytes() == before
    assert (cli_run / "metrics.jsonl").read_text() == metrics


def test_disagreeing_bounds_exit_non_zero(tmp_path, data_dir, capsys):
    trainer = small_run(tmp_path, data_dir, epochs=1, prior=WrongKLPrior(8), train_limit=300)
    trainer.fit()
    code, out, err = run_cli(["elbo", "--checkpoint", trainer.checkpoint_path, "--data-dir", data_dir,
                              "--limit", "300", "--iw-samples", "0", "--json", "--trust-module", "helper_components"],
                             capsys)  # fmt: skip
    assert code == 3
    assert abs(json.loads(out)["agreement_z"]) > 4  # the numbers are still printed
    assert_one_line_error(code, err, "disagree")


def test_console_script_in_a_real_process(tmp_path, data_dir):
    assert SCRIPT.is_file(), "the package is installed with its pyro-vae entry point"
    ok = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "train" in ok.stdout and "elbo" in ok.stdout
    bad = subprocess.run([SCRIPT, "elbo", "--checkpoint", tmp_path / "missing.pt"], capture_output=True, text=True)
    assert_one_line_error(bad.returncode, bad.stderr, "no checkpoint file")
    bad = subprocess.run([SCRIPT, "train", "--data-dir", tmp_path, "--out", tmp_path / "r", "--epochs", "-1"],
                         capture_output=True, text=True)  # fmt: skip
    assert_one_line_error(bad.returncode, bad.stderr, "--epochs")


def test_edge_sizes(tmp_path, data_dir, capsys):
    out = tmp_path / "noval"
    args = ["train", "--data-dir", data_dir, "--out", out, "--epochs", "1", *TINY[:2], "--val-size", "0",
            "--hidden", "16", "--latent-dim", "2", "--no-progress"]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.jsonl").read_text())["val_elbo"] is None
    code, _, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--data-dir", data_dir, "--split", "val"], capsys)
    assert_one_line_error(code, err, "split is empty")
    code, stdout, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--data-dir", data_dir, "--limit", "1",
                                 "--json", "--iw-samples", "3"], capsys)  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n"] == 1 and result["elbo_stderr"] is None and result["agreement_z"] is None and result["elbo"] < 0


def test_swapped_components_round_trip_through_the_cli(tmp_path, data_dir, capsys):
    out = tmp_path / "mog"
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--epochs", "2", "--out", out, *TINY,
                            "--prior", "mog", "--prior-components", "3", "--guide", "full-cov",
                            "--likelihood", "discretized-logistic", "--binarize", "none",
                            "--objective", "meanfield", "--particles", "2", "--warmup-epochs", "2"], capsys)  # fmt: skip
    assert code == 0, err
    betas = [json.loads(line)["beta"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert betas == [0.5, 1.0]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["model"]["prior"]["kwargs"] == {"num_components": 3}
    assert ckpt["config"]["train"]["objective"] == "meanfield"
    code, table, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--data-dir", data_dir, "--limit", "200",
                                "--iw-samples", "5"], capsys)  # fmt: skip
    assert code == 0, err
    assert "[monte-carlo]" in table and "no closed-form KL" in table and "bits/dim" in table
    assert "MixtureOfGaussians" in table and "FullCovGaussianGuide" in table
    code, out_json, _ = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--data-dir", data_dir, "--limit", "200",
                                 "--iw-samples", "5", "--json"], capsys)  # fmt: skip
    result = json.loads(out_json)
    assert result["kl_method"] == "monte-carlo" and abs(result["agreement_z"]) < 4
    assert result["elbo_bits_per_dim"] == pytest.approx(-result["elbo"] / (784 * math.log(2)))


def test_checkpoint_from_version_0_1_still_loads(cli_run, tmp_path, data_dir, capsys):
    """Before guide families, checkpoints had no guide entry and called the objective "elbo"."""
    ckpt = torch.load(cli_run / "ckpt.pt", weights_only=True)
    del ckpt["config"]["model"]["guide"]
    ckpt["config"]["train"]["elbo"] = ckpt["config"]["train"].pop("objective")
    for key in ("particles", "beta", "warmup_epochs", "warmup_start", "lr_schedule", "adam_eps"):
        del ckpt["config"]["train"][key]
    # ... and stored pyro.optim.Adam's state: one torch Adam per parameter, keyed by param-store name.
    vae = vae_from_config(ckpt["config"]["model"])
    state = ckpt["optim_state"]
    group = {**state["param_groups"][0], "params": [0]}
    ckpt["optim_state"] = {name: {"state": {0: state["state"][i]}, "param_groups": [group]}
                           for i, name in enumerate(vae.pyro_named_parameters())}  # fmt: skip
    torch.save(ckpt, tmp_path / "old.pt")
    code, out, err = run_cli(["elbo", "--checkpoint", tmp_path / "old.pt", "--data-dir", data_dir, "--limit", "100",
                              "--iw-samples", "0", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["guide"] == "pyro_vae.model.guides:DiagonalGaussianGuide"
    code, _, err = run_cli(["train", "--resume", tmp_path / "old.pt", "--epochs", "2", "--data-dir", data_dir,
                            "--out", tmp_path / "resumed", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    resumed = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["optim_state"]
    steps = {s["step"].item() for s in resumed["state"].values()}
    assert len(steps) == 1 and steps.pop() > {s["step"].item() for s in state["state"].values()}.pop()
