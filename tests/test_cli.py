"""The ``pyro-vae`` command: a working round trip, and one-line errors for bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import small_run
from helper_components import WrongKLPrior
from pyro_vae.cli.main import main

from pyro_vae import RunConfig

TINY = [
    "--train-limit",
    "500",
    "--val-size",
    "200",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "100",
    "--no-progress",
]
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
    code, out, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            cli_run / "ckpt.pt",
            "--data-dir",
            data_dir,
            "--json",
            "--limit",
            "400",
            "--iw-samples",
            "20",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    for key in (
        "split",
        "n",
        "elbo",
        "elbo_stderr",
        "elbo_analytic",
        "elbo_analytic_stderr",
        "agreement_z",
        "recon",
        "kl",
        "iwae",
        "iwae_k",
        "dataset",
        "binarize",
    ):
        assert key in result, key
    assert result["split"] == "test" and result["n"] == 400 and result["iwae_k"] == 20
    assert result["elbo"] < 0 and result["recon"] < 0 < result["kl"]
    assert abs(result["agreement_z"]) < 4
    assert result["iwae"] > result["elbo"]
    assert result["elbo_analytic"] == pytest.approx(result["recon"] - result["kl"])


def test_elbo_table_and_json_agree_for_the_same_seed(cli_run, data_dir, capsys):
    args = [
        "elbo",
        "--checkpoint",
        cli_run / "ckpt.pt",
        "--data-dir",
        data_dir,
        "--limit",
        "200",
        "--split",
        "val",
        "--iw-samples",
        "5",
        "--seed",
        "3",
    ]
    code, table, _ = run_cli(args, capsys)
    assert code == 0
    code, out, _ = run_cli([*args, "--json"], capsys)
    result = json.loads(out)
    assert f"{result['elbo']:10.3f}" in table and "agreement z" in table and "IWAE bound, K=5" in table


def test_resume_from_the_cli(cli_run, tmp_path, data_dir, capsys):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes((cli_run / "ckpt.pt").read_bytes())
    code, _, err = run_cli(
        ["train", "--resume", ckpt, "--epochs", "2", "--data-dir", data_dir, "--no-progress"], capsys
    )
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
    ckpt["config"]["model"]["prior"] = {"name": "my-prior", "module": "no_such_module"}
    torch.save(ckpt, missing_module)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in ckpt.items() if k != "model_state"}, incomplete)
    return {
        "garbage": (garbage, "not a checkpoint (not a file written by torch.save)"),
        "text": (text, "not a checkpoint (not a file written by torch.save)"),
        "incomplete": (incomplete, "missing model_state"),
        "truncated": (truncated, "not a readable checkpoint"),
        "foreign": (foreign, "not a pyro-vae checkpoint"),
        "missing_module": (missing_module, "--trust-module no_such_module"),
        "missing": (tmp_path / "nope.pt", "no checkpoint file"),
    }


@pytest.mark.parametrize("kind", ["garbage", "text", "truncated", "foreign", "incomplete", "missing_module", "missing"])
def test_bad_checkpoints(kind, cli_run, tmp_path, data_dir, capsys):
    path, message = _corrupt_checkpoints(tmp_path, cli_run)[kind]
    code, _, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir], capsys)
    assert_one_line_error(code, err, message)


BAD_TRAIN_OPTIONS = {  # every one a bad run description: exit 2, the same message a config file's value gets
    "unknown likelihood": (["--likelihood", "poisson"], "model.likelihood.name (--likelihood) must be one of"),
    "zero epochs": (["--epochs", "0"], "schedule.epochs (--epochs) must be >= 1"),
    "negative batch": (["--batch-size", "-5"], "optimizer.batch_size (--batch-size) must be >= 1"),
    "zero latent": (["--latent-dim", "0"], "model.latent_dim (--latent-dim) must be >= 1"),
    "zero hidden": (["--hidden", "0"], "model.net.hidden (--hidden) must be >= 1"),
    "junk hidden": (["--hidden", "4x"], "must be a list of integers"),
    "zero lr": (["--lr", "0"], "optimizer.lr (--lr) must be > 0"),
    "nan lr": (["--lr", "nan"], "not finite"),
    "bernoulli on grey": (["--binarize", "none"], "needs binary pixels"),
    "sigma on bernoulli": (
        ["--likelihood-learn-sigma"],
        "(--likelihood-learn-sigma) does not apply to --likelihood "
        "bernoulli (it applies to --likelihood gaussian or laplace)",
    ),
    "bad device": (["--device", "tpu"], "device"),
    "components on standard normal": (
        ["--prior-num-components", "5"],
        "does not apply to --prior standard-normal (it applies to --prior mog or vamp)",
    ),
    "flow steps unused": (["--prior-num-flows", "3"], "(--prior-num-flows) does not apply"),
    "spline without flow": (["--prior-transform", "spline"], "(--prior-transform) does not apply"),
    "vamp with iaf": (
        ["--prior", "vamp", "--guide", "iaf"],
        "choose a guide with a one-pass density (diagonal, full-cov)",
    ),
    "sigma on beta": (["--likelihood", "beta", "--binarize", "none", "--likelihood-sigma", "0.2"], "does not apply"),
    "learned sigma below its floor": (
        ["--likelihood", "gaussian", "--binarize", "none", "--likelihood-learn-sigma", "--likelihood-sigma", "0.005"],
        "model.likelihood (gaussian): sigma must be",
    ),
    "beta with iwae": (["--objective", "iwae", "--beta", "2"], "--beta and --warmup-epochs apply"),
    "warmup with iwae": (["--objective", "iwae", "--warmup-epochs", "2"], "--beta and --warmup-epochs apply"),
    "warmup start alone": (["--warmup-start", "0.1"], "(--warmup-start) needs objective.warmup_epochs"),
    "warmup start above beta": (["--warmup-epochs", "1", "--warmup-start", "2"], "is above beta"),
    "zero beta": (["--beta", "0"], "objective.beta (--beta) must be > 0"),
    "zero particles": (["--particles", "0"], "(--particles) must be >= 1"),
    "unknown guide": (["--guide", "planar"], "(--guide) must be one of diagonal, ladder, full-cov, iaf"),
    "huge seed": (["--seed", str(2**32)], "seed (--seed) must be >= 0 and <= 4294967295"),
    "too many flows": (["--prior", "flow", "--prior-num-flows", "1001"], "must be >= 1 and <= 1000"),
    "unknown option": (["--sigma", "0.1"], "No such option"),  # (click 8.1 and later word the rest differently)
}


@pytest.mark.parametrize("case", BAD_TRAIN_OPTIONS)
def test_bad_train_options(case, tmp_path, data_dir, capsys):
    extra, message = BAD_TRAIN_OPTIONS[case]
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--out", tmp_path / "r", *TINY, *extra], capsys)
    assert_one_line_error(code, err, message)
    assert code == 2
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
    code, out, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            trainer.checkpoint_path,
            "--data-dir",
            data_dir,
            "--limit",
            "300",
            "--iw-samples",
            "0",
            "--json",
            "--trust-module",
            "helper_components",
        ],
        capsys,
    )
    assert code == 3
    assert abs(json.loads(out)["agreement_z"]) > 4  # the numbers are still printed
    assert_one_line_error(code, err, "disagree")


def test_console_script_in_a_real_process(tmp_path, data_dir):
    assert SCRIPT.is_file(), "the package is installed with its pyro-vae entry point"
    ok = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "train" in ok.stdout and "elbo" in ok.stdout
    bad = subprocess.run([SCRIPT, "elbo", "--checkpoint", tmp_path / "missing.pt"], capture_output=True, text=True)
    assert_one_line_error(bad.returncode, bad.stderr, "no checkpoint file")
    bad = subprocess.run(
        [SCRIPT, "train", "--data-dir", tmp_path, "--out", tmp_path / "r", "--epochs", "-1"],
        capture_output=True,
        text=True,
    )
    assert_one_line_error(bad.returncode, bad.stderr, "--epochs")


def test_edge_sizes(tmp_path, data_dir, capsys):
    out = tmp_path / "noval"
    args = [
        "train",
        "--data-dir",
        data_dir,
        "--out",
        out,
        "--epochs",
        "1",
        *TINY[:2],
        "--val-size",
        "0",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--no-progress",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "metrics.jsonl").read_text())["val_elbo"] is None
    code, _, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--data-dir", data_dir, "--split", "val"], capsys)
    assert_one_line_error(code, err, "this run has no val images")
    code, stdout, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            out / "ckpt.pt",
            "--data-dir",
            data_dir,
            "--limit",
            "1",
            "--json",
            "--iw-samples",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n"] == 1 and result["elbo_stderr"] is None and result["agreement_z"] is None and result["elbo"] < 0


def test_swapped_components_round_trip_through_the_cli(tmp_path, data_dir, capsys):
    out = tmp_path / "mog"
    code, _, err = run_cli(
        [
            "train",
            "--data-dir",
            data_dir,
            "--epochs",
            "2",
            "--out",
            out,
            *TINY,
            "--prior",
            "mog",
            "--prior-num-components",
            "3",
            "--guide",
            "full-cov",
            "--likelihood",
            "discretized-logistic",
            "--binarize",
            "none",
            "--objective",
            "meanfield",
            "--particles",
            "2",
            "--warmup-epochs",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    assert "beta 0.5" in err  # the KL weight is in the log
    betas = [json.loads(line)["beta"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert betas == [0.5, 1.0]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["model"]["prior"] == {"name": "mog", "num_components": 3}
    assert ckpt["config"]["objective"]["kind"] == "meanfield"
    code, table, err = run_cli(
        ["elbo", "--checkpoint", out / "ckpt.pt", "--limit", "200", "--iw-samples", "5"], capsys
    )  # the data folder is the recorded one
    assert code == 0, err
    assert "[monte-carlo]" in table and "no closed-form KL" in table and "bits/dim" in table
    assert "prior mog(num_components=3)" in table and "guide full-cov" in table
    code, out_json, _ = run_cli(
        [
            "elbo",
            "--checkpoint",
            out / "ckpt.pt",
            "--data-dir",
            data_dir,
            "--limit",
            "200",
            "--iw-samples",
            "5",
            "--json",
        ],
        capsys,
    )
    result = json.loads(out_json)
    assert result["kl_method"] == "monte-carlo" and abs(result["agreement_z"]) < 4
    assert result["elbo_bits_per_dim"] == pytest.approx(-result["elbo"] / (784 * math.log(2)))


def version_0_1_checkpoint(new: dict) -> dict:
    """A format-2 checkpoint of the standard-normal/Bernoulli/diagonal model in version 0.1's layout: format 1,
    no guide entry, the objective called "elbo", module:Class targets in the flat package, pyro.optim's state."""
    old = {**new, "format_version": 1, "data_dir": new["config"]["data"].pop("root")}
    model = new["config"]["model"]
    old["config"] = {
        "model": {
            "net": {**model["net"], "latent_dim": model["latent_dim"]},
            "prior": {"target": "pyro_vae.priors:StandardNormal", "args": [model["latent_dim"]], "kwargs": {}},
            "likelihood": {"target": "pyro_vae.likelihoods:Bernoulli", "args": [], "kwargs": {}},
        },
        "data": new["config"]["data"],
        "train": {"epochs": 1, "batch_size": 100, "lr": 1e-3, "seed": 0, "elbo": "trace", "checkpoint_every": 1},
    }
    vae = RunConfig.from_dict(new["config"]).untrained_model()
    state = new["optim_state"]
    group = {**state["param_groups"][0], "params": [0]}
    old["optim_state"] = {
        name: {"state": {0: state["state"][i]}, "param_groups": [group]}
        for i, name in enumerate(vae.pyro_named_parameters())
    }
    return old


def test_checkpoint_from_version_0_1_still_loads(cli_run, tmp_path, data_dir, capsys):
    new = torch.load(cli_run / "ckpt.pt", weights_only=True)
    torch.save(version_0_1_checkpoint(new), tmp_path / "old.pt")
    args = ["--limit", "100", "--iw-samples", "0", "--json"]
    code, out, err = run_cli(["elbo", "--checkpoint", tmp_path / "old.pt", *args], capsys)
    assert code == 0, err
    assert json.loads(out)["guide"] == "diagonal"
    code, same, err = run_cli(["elbo", "--checkpoint", cli_run / "ckpt.pt", *args], capsys)
    assert json.loads(out)["elbo"] == json.loads(same)["elbo"]
    code, _, err = run_cli(
        ["train", "--resume", tmp_path / "old.pt", "--epochs", "2", "--out", tmp_path / "resumed", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    resumed = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)
    assert resumed["format_version"] == 2 and resumed["config"]["objective"]["kind"] == "trace"
    steps = {s["step"].item() for s in resumed["optim_state"]["state"].values()}
    assert len(steps) == 1 and steps.pop() > {s["step"].item() for s in new["optim_state"]["state"].values()}.pop()


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["v1_mog_gaussian_fullcov.pt", "v1_flow_iaf.pt"])
def test_format_1_checkpoints_written_by_0_1_give_the_same_bounds(name, data_dir, tmp_path, capsys):
    """Real checkpoints written by pyro-vae 0.1 (tests/fixtures, made by the command in v1_bounds.json) convert
    to a RunConfig and reproduce the bounds 0.1 printed, to float32 rounding (the last printed digits depend on
    the machine's BLAS kernels: this check failed at the 8th significant digit on another x86-64 CPU)."""
    expected = json.loads((FIXTURES / "v1_bounds.json").read_text())[name]
    code, out, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            FIXTURES / name,
            "--data-dir",
            data_dir,
            "--limit",
            "200",
            "--iw-samples",
            "10",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert {key: result[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    config = RunConfig.from_checkpoint(torch.load(FIXTURES / name, weights_only=True))
    assert config.model.latent_dim == 4 and config.optimizer.batch_size == 100
