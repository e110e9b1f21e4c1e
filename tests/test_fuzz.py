"""Fuzz: generated bad inputs across every subcommand each end in one error line and a non-zero exit.

Each case runs the command in-process (``pyro_vae.cli.main.main``): an exception that escaped as a traceback
would fail the test. Cases are generated from tables of options and bad values (negative, zero, huge,
NaN, wrong types, bad paths) and of damaged files of every kind the tool reads (checkpoints, idx data,
metrics). Only values that must be refused are listed: a huge ``--epochs`` is a long run, not an error.
"""

import os
import pickle
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

INT_OPTIONS = {  # option: values that must be refused (beyond the generic ones below)
    "train": {
        "--epochs": ["0"],
        "--batch-size": ["0"],
        "--latent-dim": ["0", "100000000"],
        "--particles": ["0"],
        "--checkpoint-every": ["0"],
        "--prior-num-flows": ["0", "1000001"],
        "--prior-num-components": ["0"],
        "--train-limit": ["0"],
        "--val-size": [],
        "--warmup-epochs": [],
        "--plot-every": [],
        "--seed": ["4294967296"],
    },
    "elbo": {
        "--num-particles": ["0"],
        "--iw-samples": [],
        "--limit": ["0"],
        "--batch-size": ["0"],
        "--seed": ["4294967296"],
    },
    "sample": {"-n": ["0"], "--seed": ["99999999999999999999"]},
    "encode": {"--limit": ["0"], "--batch-size": ["0"], "--seed": []},
    "plot": {"--num-points": ["15"], "--seed": []},
}
GENERIC_BAD_INTS = ["-1", "abc", "2.5", "nan", ""]
FLOAT_OPTIONS = {
    "--lr": ["0"],
    "--likelihood-sigma": ["0"],
    "--adam-eps": ["0"],
    "--beta": ["0"],
    "--warmup-start": [],
    "--collapse-warning": ["1.5"],
}
GENERIC_BAD_FLOATS = ["-1", "nan", "inf", "-inf", "abc", ""]
CHOICES = {
    "train": [
        "--dataset",
        "--binarize",
        "--likelihood",
        "--prior",
        "--guide",
        "--net",
        "--activation",
        "--objective",
        "--lr-schedule",
        "--prior-transform",
    ],
    "elbo": ["--split"],
    "sample": ["--pixels"],
    "encode": ["--split"],
    "plot": ["--split"],
}
TINY = ["--train-limit", "300", "--val-size", "100", "--hidden", "16", "--latent-dim", "2", "--no-progress"]


def _prefix(command: str, ckpt: Path, tmp: Path, data_dir: Path) -> list:
    """A valid command line that the bad option is appended to."""
    return {
        "train": ["train", "--data-dir", data_dir, "--out", tmp / "run", *TINY],
        "elbo": ["elbo", "--checkpoint", ckpt, "--data-dir", data_dir, "--limit", "50"],
        "sample": ["sample", "--checkpoint", ckpt, "--out", tmp / "s.png"],
        "encode": ["encode", "--checkpoint", ckpt, "--data-dir", data_dir, "--out", tmp / "z.npz"],
        "plot": ["plot", "--checkpoint", ckpt, "--data-dir", data_dir, "--out", tmp / "plots"],
        "info": ["info", ckpt],
        "export": ["export", ckpt, tmp / "exported"],
    }[command]


def _option_cases() -> list[tuple[str, list]]:
    cases = []
    for command, options in INT_OPTIONS.items():
        for option, extra in options.items():
            cases += [(command, [option, value]) for value in GENERIC_BAD_INTS + extra]
    cases += [
        ("train", [option, value]) for option, extra in FLOAT_OPTIONS.items() for value in GENERIC_BAD_FLOATS + extra
    ]
    cases += [(command, [option, "bogus"]) for command, options in CHOICES.items() for option in options]
    cases += [(command, ["--device", device]) for command in CHOICES for device in ("tpu", "cuda:99", "cpu:x", "")]
    cases += [(command, ["--no-such-option"]) for command in CHOICES]
    cases += [(command, ["--trust-module", name]) for command in ("elbo", "sample") for name in ("", "a b", "..x")]
    cases += [
        ("train", ["--hidden", "10000000"]),
        ("train", ["--hidden", "4,-2"]),
        ("train", ["--hidden", ",".join(["8"] * 101)]),
        ("train", ["--particles", "100000000"]),
        ("train", ["--prior", "mog", "--prior-components", "1000000000"]),
        ("train", ["--prior", "vamp", "--prior-components", "100000000"]),
        ("train", ["--val-size", "1000000000"]),
        ("train", ["--data-dir", "/nonexistent/folder"]),
        ("train", ["--out", "/proc/version"]),
        ("train", ["--trust-module", "my_components"]),
        ("train", ["--resume", "/nonexistent/ckpt.pt"]),
        ("elbo", ["--data-dir", "/nonexistent/folder"]),
        ("elbo", ["--data-dir", "/proc/version"]),
        ("elbo", ["--split", "val", "--limit", "-3"]),
        ("sample", ["-n", "1000000000000"]),
        ("sample", ["--out", "x.txt"]),
        ("sample", ["--out", "/"]),
        ("encode", ["--out", "z.csv"]),
        ("plot", ["--out", "/proc/version"]),
    ]
    return cases


OPTION_CASES = _option_cases()


@pytest.fixture(scope="module")
def damaged(trained, tmp_path_factory, data_dir):
    """Damaged and crafted files of every kind the tool reads, by name."""
    root = tmp_path_factory.mktemp("damaged")
    real = trained.checkpoint_path.read_bytes()
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    files = {
        "empty": b"",
        "text": b"hello\n",
        "garbage": os.urandom(4096),
        "truncated": real[: len(real) // 3],
        "tail": real[len(real) // 2 :],
        "one_byte_flipped": real[:100] + bytes([real[100] ^ 0xFF]) + real[101:],
        "json": b'{"format": "pyro-vae-checkpoint"}',
        "zip_of_nothing": b"PK\x05\x06" + b"\x00" * 18,
    }

    class RunsCode:  # a classic malicious pickle: unpickling it would call os.system
        def __reduce__(self):
            return (os.system, (f"touch {root / 'pwned'}",))

    files["pickle_with_code"] = pickle.dumps(RunsCode())
    paths = {}
    for name, body in files.items():
        paths[name] = root / f"{name}.pt"
        paths[name].write_bytes(body)

    def crafted(name, change):
        c = torch.load(trained.checkpoint_path, weights_only=True)
        change(c)
        paths[name] = root / f"{name}.pt"
        torch.save(c, paths[name])

    torch.save({"weights": torch.ones(2)}, root / "foreign.pt")
    paths["foreign"] = root / "foreign.pt"
    crafted("future_format", lambda c: c.update(format_version=99))
    crafted("no_config", lambda c: c.pop("config"))
    crafted("config_not_dict", lambda c: c.update(config=[1, 2]))
    crafted("epoch_string", lambda c: c.update(epoch="ten"))
    crafted("negative_epoch", lambda c: c.update(epoch=-4))
    crafted("state_not_tensors", lambda c: c.update(model_state={"x": [1, 2]}))
    crafted("wrong_shapes", lambda c: c["model_state"].update({k: torch.zeros(3) for k in c["model_state"]}))
    crafted("missing_weights", lambda c: c.update(model_state={}))
    crafted("huge_network", lambda c: c["config"]["model"]["net"].update(hidden=[10**7]))
    crafted("bad_net_kind", lambda c: c["config"]["model"]["net"].update(kind="transformer"))
    crafted("hidden_strings", lambda c: c["config"]["model"]["net"].update(hidden=["a"]))
    crafted("bad_dataset", lambda c: c["config"]["data"].update(dataset="imagenet"))
    crafted("val_size_string", lambda c: c["config"]["data"].update(val_size="many"))
    crafted("unknown_data_key", lambda c: c["config"]["data"].update(colour=True))
    crafted("lr_string", lambda c: c["config"]["optimizer"].update(lr="fast"))
    crafted("unknown_section", lambda c: c["config"].update(callbacks={"run": "rm"}))
    crafted("os_system", lambda c: c["config"]["model"].update(prior={"name": "system", "module": "os"}))
    crafted("spec_not_dict", lambda c: c["config"]["model"].update(likelihood=["bernoulli"]))
    crafted("bad_option", lambda c: c["config"]["model"]["prior"].update(x=1))
    crafted(
        "tensor_option", lambda c: c["config"]["model"].update(prior={"name": "mog", "num_components": torch.ones(1)})
    )
    crafted("old_format_garbage", lambda c: c.update(format_version=1))
    crafted("rng_damaged", lambda c: c.update(rng={"torch": torch.zeros(3)}))
    crafted("optim_damaged", lambda c: c.update(optim_state={"state": {}, "param_groups": [{"params": [99]}]}))
    crafted("partial_damaged", lambda c: c.update(partial_epoch={"epoch": 1}))
    crafted("metrics_not_list", lambda c: c.update(metrics="epoch 1"))
    assert ckpt["epoch"] == 2
    # A run folder whose checkpoint is fine but whose metrics.jsonl is not (plot reads it).
    bad_metrics = root / "bad_metrics"
    bad_metrics.mkdir()
    (bad_metrics / "ckpt.pt").write_bytes(real)
    (bad_metrics / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 3}\n{"epoch": 2, "train_lo')
    paths["bad_metrics_jsonl"] = bad_metrics / "ckpt.pt"
    paths["a_directory"] = root
    paths["missing"] = root / "nope.pt"
    paths["hub_unreachable"] = "hf://nobody/no-such-model"  # no network here: the download fails in one line
    return paths


CHECKPOINT_COMMANDS = ["elbo", "sample", "encode", "plot", "resume", "info", "export"]
DAMAGED = [
    "empty",
    "text",
    "garbage",
    "truncated",
    "tail",
    "one_byte_flipped",
    "json",
    "zip_of_nothing",
    "pickle_with_code",
    "foreign",
    "future_format",
    "no_config",
    "config_not_dict",
    "epoch_string",
    "negative_epoch",
    "state_not_tensors",
    "wrong_shapes",
    "missing_weights",
    "huge_network",
    "bad_net_kind",
    "hidden_strings",
    "os_system",
    "spec_not_dict",
    "bad_option",
    "tensor_option",
    "unknown_section",
    "old_format_garbage",
    "a_directory",
    "missing",
]
DATA_CONFIG = ["bad_dataset", "val_size_string", "unknown_data_key"]  # read by every command but sample
RESUME_ONLY = ["lr_string", "rng_damaged", "optim_damaged", "partial_damaged", "metrics_not_list"]


@pytest.mark.parametrize("command, extra", OPTION_CASES, ids=[f"{c} {' '.join(e)}"[:60] for c, e in OPTION_CASES])
def test_bad_options(command, extra, trained, tmp_path, data_dir, capsys):
    args = _prefix(command, trained.checkpoint_path, tmp_path, data_dir) + extra
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


FILE_CASES = (
    [(c, d) for c in CHECKPOINT_COMMANDS for d in DAMAGED]
    + [(c, d) for c in CHECKPOINT_COMMANDS if c != "sample" for d in DATA_CONFIG]
    + [(c, "hub_unreachable") for c in CHECKPOINT_COMMANDS if c not in ("resume", "export")]
    + [("resume", d) for d in RESUME_ONLY]
    + [("plot", "bad_metrics_jsonl")]
)


@pytest.mark.parametrize("command, kind", FILE_CASES, ids=[f"{c}-{k}" for c, k in FILE_CASES])
def test_damaged_files(command, kind, damaged, tmp_path, data_dir, capsys):
    path = damaged[kind]
    args = (
        ["train", "--resume", path, "--epochs", "3", "--data-dir", data_dir, "--out", tmp_path / "r", "--no-progress"]
        if command == "resume"
        else _prefix(command, path, tmp_path, data_dir)
    )
    code, _, err = run_cli(args, capsys)
    assert code not in (0, None) and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("pyro-vae: error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert not (damaged["a_directory"] / "pwned").exists()


def test_a_damaged_data_folder(data_dir, tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (data_dir / "MNIST" / "raw").glob("*-ubyte"):
        (raw / source.name).symlink_to(source.resolve())
    images = raw / "train-images-idx3-ubyte"
    images.unlink()
    images.write_bytes((data_dir / "MNIST" / "raw" / images.name).read_bytes()[:1000])
    code, _, err = run_cli(["train", "--data-dir", tmp_path, "--out", tmp_path / "run", *TINY], capsys)
    assert_one_line_error(code, err, f"{images} is corrupt: 1000 bytes where its header promises 47040016")


def test_the_fuzz_covers_at_least_a_hundred_inputs():
    assert len(OPTION_CASES) + len(FILE_CASES) + 1 >= 100
