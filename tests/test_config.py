"""One RunConfig for the command line, config files, checkpoints and Python; one installed package."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Annotated

import pytest
import torch
from conftest import ROOT
from test_cli import TINY, assert_one_line_error, run_cli

from pyro_vae import ComponentConfig, DataConfig, ModelConfig, ObjectiveConfig, Option, RunConfig, StandardNormal
from pyro_vae.config import _from_table, read_table, settings, with_overrides
from pyro_vae.errors import ConfigError


class ShiftedNormal(StandardNormal):
    """A prior written in a test, to show that one class is all a new component needs."""

    name = "test-shifted"

    def __init__(self, latent_dim: int, shift: Annotated[float, Option("mean of every coordinate", min=0)] = 1.0):
        super().__init__(latent_dim)
        self.loc.fill_(shift)


def test_a_new_component_class_gets_its_command_line_option(tmp_path, data_dir, capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--prior-shift" in out and "test-shifted: mean of every coordinate" in out
    run = tmp_path / "shifted"
    code, _, err = run_cli(
        [
            "train",
            "--data-dir",
            data_dir,
            "--out",
            run,
            "--epochs",
            "1",
            *TINY,
            "--prior",
            "test-shifted",
            "--prior-shift",
            "2.5",
        ],
        capsys,
    )
    assert code == 0, err
    assert read_table(run / "config.toml")["model"]["prior"] == {
        "name": "test-shifted",
        "module": "test_config",
        "shift": 2.5,
    }
    code, _, err = run_cli(
        [
            "train",
            "--data-dir",
            data_dir,
            "--out",
            tmp_path / "r",
            *TINY,
            "--prior",
            "test-shifted",
            "--prior-shift",
            "-1",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "model.prior.shift (--prior-shift) must be >= 0, got -1.0")
    code, _, err = run_cli(
        ["train", "--data-dir", data_dir, "--out", tmp_path / "r", *TINY, "--prior-shift", "1"], capsys
    )
    assert_one_line_error(code, err, "does not apply to --prior standard-normal (it applies to --prior test-shifted)")
    # Its checkpoint loads wherever the module is trusted.
    code, out, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            run / "ckpt.pt",
            "--limit",
            "50",
            "--iw-samples",
            "0",
            "--json",
            "--trust-module",
            "test_config",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["prior"] == "test_config:test-shifted(shift=2.5)"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("config") / "first"
    with pytest.raises(SystemExit) as exc:
        from pyro_vae.cli.main import main

        main(
            [
                str(a)
                for a in [
                    "train",
                    "--data-dir",
                    data_dir,
                    "--out",
                    out,
                    "--epochs",
                    "2",
                    *TINY,
                    "--prior",
                    "mog",
                    "--prior-num-components",
                    "3",
                    "--beta",
                    "0.5",
                    "--warmup-epochs",
                    "1",
                    "--seed",
                    "7",
                    "--threads",
                    "2",
                ]
            ]
        )  # (a fixed count: on some CPUs it decides the rounding)
    assert exc.value.code == 0
    return out


def test_config_toml_repeats_the_run_exactly(first_run, tmp_path, capsys):
    """``train --config OUT/config.toml`` gives bit-identical weights, the same metrics and the same bounds."""
    again = tmp_path / "again"
    code, _, err = run_cli(
        ["train", "--config", first_run / "config.toml", "--out", again, "--no-progress", "--threads", "2"], capsys
    )
    assert code == 0, err
    first, second = (torch.load(p / "ckpt.pt", weights_only=True) for p in (first_run, again))
    assert first["config"] == second["config"]
    assert all(torch.equal(first["model_state"][k], second["model_state"][k]) for k in first["model_state"])
    drop_times = lambda ms: [{k: v for k, v in m.items() if k not in ("seconds", "images_per_s")} for m in ms]  # noqa
    assert drop_times(first["metrics"]) == drop_times(second["metrics"])
    bounds = [
        run_cli(["elbo", "--checkpoint", p / "ckpt.pt", "--limit", "300", "--iw-samples", "5", "--json"], capsys)[1]
        for p in (first_run, again)
    ]  # the recorded data folder
    numbers = [
        {k: v for k, v in json.loads(b).items() if isinstance(v, float) and k not in ("seconds", "peak_memory_mib")}
        for b in bounds
    ]
    assert numbers[0] == numbers[1] and numbers[0]["elbo"] < 0


def test_the_checkpoint_stores_the_config_as_is(first_run):
    ckpt = torch.load(first_run / "ckpt.pt", weights_only=True)
    assert ckpt["format_version"] == 2
    assert ckpt["config"] == read_table(first_run / "config.toml")
    config = RunConfig.from_checkpoint(ckpt)
    assert config.seed == 7 and config.model.prior == ComponentConfig("mog", {"num_components": 3})
    assert config.objective == ObjectiveConfig(beta=0.5, warmup_epochs=1)


def test_command_line_options_override_the_file(first_run, tmp_path, capsys):
    out = tmp_path / "override"
    code, _, err = run_cli(
        [
            "train",
            "--config",
            first_run / "config.toml",
            "--out",
            out,
            "--epochs",
            "1",
            "--latent-dim",
            "3",
            "--prior",
            "vamp",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    table = read_table(out / "config.toml")
    assert table["schedule"]["epochs"] == 1 and table["model"]["latent_dim"] == 3  # from the command line
    assert table["seed"] == 7 and table["objective"]["beta"] == 0.5  # from the file
    # A new prior drops the options the file gave the old one: vamp gets its own default, not mog's 3.
    assert table["model"]["prior"] == {"name": "vamp", "num_components": 500}
    code, _, err = run_cli(
        ["train", "--config", first_run / "config.toml", "--out", out, "--no-progress", "--prior-num-components", "0"],
        capsys,
    )
    assert_one_line_error(code, err, "model.prior.num_components (--prior-num-components) must be >= 1, got 0")


BAD_FILES = {  # file text, what the one-line error says, the command-line spelling of the same mistake
    "unknown key": ("[model]\nlatent_size = 4\n", "unknown key model.latent_size", None),
    "unknown section": ("[trainer]\nepochs = 3\n", "unknown key trainer", None),
    "wrong type": (
        '[model]\nlatent_dim = "four"\n',
        "model.latent_dim (--latent-dim) must be an integer",
        ["--latent-dim", "four"],
    ),
    "impossible value": (
        "[model]\nlatent_dim = 0\n",
        "model.latent_dim (--latent-dim) must be >= 1 and <= 1000000, got 0",
        ["--latent-dim", "0"],
    ),
    "bool as number": ("[objective]\njit = 1\n", "objective.jit (--jit) must be true or false", None),
    "float for int": ("[schedule]\nepochs = 2.5\n", "schedule.epochs (--epochs) must be an integer", None),
    "unknown component": (
        '[model.prior]\nname = "gmm"\n',
        "model.prior.name (--prior) must be one of",
        ["--prior", "gmm"],
    ),
    "option of another component": (
        '[model.likelihood]\nname = "bernoulli"\nsigma = 0.2\n',
        "(--likelihood-sigma) does not apply to --likelihood bernoulli",
        ["--likelihood-sigma", "0.2"],
    ),
    "rule between settings": (
        '[data]\nbinarize = "none"\n',
        "--likelihood bernoulli needs binary pixels",
        ["--binarize", "none"],
    ),
    "section not a table": ("model = 3\n", "model must be a table", None),
    "not toml": ("[model\nlatent_dim = 4\n", "is not valid TOML", None),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_config_files_get_the_command_lines_one_line_errors(case, tmp_path, data_dir, capsys):
    text, message, same_on_command_line = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code, _, err = run_cli(["train", "--config", path, "--out", tmp_path / "r", "--data-dir", data_dir], capsys)
    assert_one_line_error(code, err, message)
    assert code == 2 and str(path) in err and not (tmp_path / "r").exists()
    if same_on_command_line:
        code_cli, _, err_cli = run_cli(["train", "--out", tmp_path / "r", *same_on_command_line], capsys)
        assert code_cli == 2 and err_cli.replace("pyro-vae: error: ", "") == err.split(f"{path}: ", 1)[1]


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "no config file at")


RULES = {  # the same run described in Python and on the command line is refused with the same message
    "vamp with iaf": ({"model.prior.name": "vamp", "model.guide.name": "iaf"}, ["--prior", "vamp", "--guide", "iaf"]),
    "bernoulli on grey": ({"data.binarize": "none"}, ["--binarize", "none"]),
    "warmup start alone": ({"objective.warmup_start": 0.5}, ["--warmup-start", "0.5"]),
    "iwae with beta": ({"objective.kind": "iwae", "objective.beta": 2.0}, ["--objective", "iwae", "--beta", "2"]),
    "learned sigma below floor": (
        {
            "model.likelihood.name": "laplace",
            "model.likelihood.learn_sigma": True,
            "model.likelihood.sigma": 0.01,
            "data.binarize": "none",
        },
        ["--likelihood", "laplace", "--likelihood-learn-sigma", "--likelihood-sigma", "0.01", "--binarize", "none"],
    ),
}


@pytest.mark.parametrize("case", RULES)
def test_every_rule_holds_from_python_as_from_the_command_line(case, tmp_path, capsys):
    overrides, flags = RULES[case]
    with pytest.raises(ConfigError) as python:
        config = RunConfig().updated(overrides)
        config.build_model()  # a component's own rule (sigma above its floor) is its constructor's
    code, _, err = run_cli(["train", "--out", tmp_path / "r", *flags], capsys)
    assert code == 2 and err.strip() == f"pyro-vae: error: {python.value}"


def test_every_setting_has_one_key_and_one_flag():
    found = settings()
    keys, flags = [s.key for s in found], [s.flag for s in found]
    assert len(set(flags)) == len(flags)
    table = RunConfig().to_dict()
    for setting in found:
        if (
            setting.default is not None
            and ".prior." not in setting.key
            and ".likelihood." not in setting.key
            and ".guide." not in setting.key
        ):
            node = table
            for part in setting.key.split("."):
                node = node[part]
            assert node == (list(setting.default) if isinstance(setting.default, tuple) else setting.default)
    assert "model.latent_dim" in keys and "data.root" in keys


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_ready_configs_are_valid_and_round_trip(path):
    config = RunConfig.read_toml(path)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert f"configs/{path.name}" in (ROOT / "README.md").read_text(), f"the README names configs/{path.name}"


def test_reference_config_is_the_make_train_run():
    config = RunConfig.read_toml(ROOT / "configs" / "mnist-reference.toml")
    assert config == RunConfig(data=DataConfig("mnist", "dynamic"), model=ModelConfig(latent_dim=20))
    makefile = (ROOT / "Makefile").read_text()
    assert "--config configs/mnist-reference.toml" in makefile


def test_overrides_replace_a_components_options_only_when_its_name_changes():
    table = {"model": {"prior": {"name": "mog", "num_components": 3}}}
    assert with_overrides(table, {"model.prior.name": "mog"})["model"]["prior"]["num_components"] == 3
    assert with_overrides(table, {"model.prior.name": "flow"})["model"]["prior"] == {"name": "flow"}
    assert table["model"]["prior"]["num_components"] == 3  # the input is not changed


def test_wheel_installs_exactly_one_package_that_runs(tmp_path):
    """A wheel built from the repository holds one top-level package, pyro_vae, and its commands work when it is
    installed into a fresh environment (the dependencies come from this one's site-packages)."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, ROOT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("pyro_vae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info" not in n.split("/")[0]} == {"pyro_vae"}
    assert "pyro_vae/cli/main.py" in names and "pyro_vae/__main__.py" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's packages (torch, pyro, ...) without its editable pyro_vae: a .pth path, not a site dir.
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
        )

    version = run(venv / "bin" / "pyro-vae", "--version")
    assert version.returncode == 0 and version.stdout.strip() == "pyro-vae 0.2.0", version.stderr
    assert run(venv / "bin" / "pyro-vae", "--help").returncode == 0
    module = run(python, "-m", "pyro_vae", "train", "--help")
    assert module.returncode == 0 and "--prior-num-components" in module.stdout, module.stderr
    where = run(python, "-c", "import pyro_vae; print(pyro_vae.__file__)").stdout
    assert where.startswith(site), where


def test_validate_changes_nothing_and_resolved_gives_the_normalised_copy():
    from pyro_vae import ComponentConfig, ModelConfig, NetConfig

    config = RunConfig(model=ModelConfig(net=NetConfig(hidden=[64]), prior=ComponentConfig("mog")))
    config.validate()
    assert config.model.net.hidden == [64] and config.model.prior.options == {}  # as given
    resolved = config.resolved()
    assert resolved.model.net.hidden == (64,) and resolved.model.prior.options == {"num_components": 10}
    assert resolved.model.prior.component_class.__name__ == "MixtureOfGaussians"
    assert config.model.prior.component_class is None  # (the caller's config is untouched)


def test_trust_is_decided_once_when_a_config_is_read():
    table = RunConfig().to_dict()
    table["model"]["likelihood"] = {"name": "WrongLogProbBernoulli", "module": "helper_components"}
    config = RunConfig.from_dict(table, "t", trust_modules=["helper_components"])
    assert type(config.untrained_model().likelihood).__name__ == "WrongLogProbBernoulli"  # no trust needed again
    assert type(config.updated({"objective.beta": 2.0}).build_model().likelihood).__name__ == "WrongLogProbBernoulli"
    with pytest.raises(ConfigError, match="not trusted"):  # the control: read without trusting the module
        RunConfig.from_dict(table, "t")


def test_trust_modules_on_build_model_still_works_until_0_4():
    table = RunConfig().to_dict()
    table["model"]["likelihood"] = {"name": "WrongLogProbBernoulli", "module": "helper_components"}
    config = _from_table(RunConfig, table, "")  # (as a script builds one: nothing resolved yet)
    with pytest.warns(FutureWarning, match="resolved\\(trust_modules\\)"):
        vae = config.build_model(["helper_components"])
    assert type(vae.likelihood).__name__ == "WrongLogProbBernoulli"
    with pytest.raises(ConfigError, match="not trusted"):
        config.build_model()


def test_a_component_renamed_after_it_was_resolved_gets_its_new_class():
    config = RunConfig.from_dict(RunConfig().to_dict(), "t")
    config.model.likelihood.name = "gaussian"
    config.model.prior = dataclasses.replace(config.model.prior, name="mog", options={"num_components": 3})
    config.data.binarize = "none"
    vae = config.build_model()
    assert type(vae.likelihood).__name__ == "Gaussian" and type(vae.prior).__name__ == "MixtureOfGaussians"
    assert type(RunConfig.from_dict(RunConfig().to_dict(), "t").build_model().likelihood).__name__ == "Bernoulli"


def test_the_removed_file_name_constants_still_answer_until_0_4():
    import pyro_vae
    from pyro_vae.training import callbacks, trainer

    with pytest.warns(FutureWarning, match="RunFolder.CHECKPOINT"):
        assert trainer.CHECKPOINT_NAME == "ckpt.pt"
    with pytest.warns(FutureWarning, match="RunFolder.BEST"):
        assert callbacks.BEST_NAME == "best.pt"
    with pytest.raises(AttributeError):
        getattr(trainer, "NO_SUCH_NAME")  # noqa: B009
    assert pyro_vae.pipeline.load_model is pyro_vae.load_model  # submodules reachable from the root, as before
