"""A checkpoint is data: it names classes, and only trusted ones are imported and called."""

import sys

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from pyro_vae.errors import CheckpointError
from pyro_vae.model.rebuild import build


def _crafted(trained, tmp_path, site: str, target_spec: dict):
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    ckpt["config"]["model"][site] = target_spec
    path = tmp_path / f"crafted_{site}.pt"
    torch.save(ckpt, path)
    return path


def _attacks(marker):
    return {
        "os:system": {"target": "os:system", "args": [f"touch {marker}"], "kwargs": {}},
        "posix:system": {"target": "posix:system", "args": [f"touch {marker}"], "kwargs": {}},
        "subprocess:run": {"target": "subprocess:run", "args": [["touch", str(marker)]], "kwargs": {}},
        "builtins:exec": {"target": "builtins:exec", "args": [f"open({str(marker)!r}, 'w').close()"], "kwargs": {}},
    }


@pytest.mark.parametrize("attack", ["os:system", "posix:system", "subprocess:run", "builtins:exec"])
@pytest.mark.parametrize("site", ["prior", "likelihood", "guide"])
def test_crafted_targets_never_run(attack, site, trained, tmp_path, data_dir, capsys):
    marker = tmp_path / "pwned"
    path = _crafted(trained, tmp_path, site, _attacks(marker)[attack])
    for command in (["elbo", "--limit", "50", "--iw-samples", "0"], ["sample", "--out", tmp_path / "s.png"]):
        code, _, err = run_cli([command[0], "--checkpoint", path, "--data-dir", data_dir, *command[1:]]
                               if command[0] == "elbo" else [command[0], "--checkpoint", path, *command[1:]], capsys)
        assert_one_line_error(code, err, "not trusted")
        assert not marker.exists()
    code, _, err = run_cli(["train", "--resume", path, "--epochs", "3", "--data-dir", data_dir,
                            "--out", tmp_path / "resumed", "--no-progress"], capsys)  # fmt: skip
    assert_one_line_error(code, err, "not trusted")
    assert not marker.exists() and not (tmp_path / "resumed" / "ckpt.pt").exists()


EVIL_MODULE = '''
from pathlib import Path
Path({marker!r}).touch()  # import-time code: must never run unless trusted

from pyro_vae import StandardNormal


class SparsePrior(StandardNormal):
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module on sys.path whose import leaves a marker file, with a genuine Prior subclass in it."""
    name = f"user_components_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_untrusted_module_is_not_even_imported(user_module, trained, tmp_path, data_dir, capsys):
    name, marker = user_module
    path = _crafted(trained, tmp_path, "prior", {"target": f"{name}:SparsePrior", "args": [8], "kwargs": {}})
    code, _, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir, "--limit", "50"], capsys)
    assert_one_line_error(code, err, f"pass --trust-module {name}")
    assert name not in sys.modules and not marker.exists()
    # Trusting some other module does not trust this one.
    code, _, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir, "--limit", "50",
                            "--trust-module", "something_else"], capsys)  # fmt: skip
    assert_one_line_error(code, err, "not trusted")
    assert name not in sys.modules
    # Trusted explicitly, the same checkpoint loads and evaluates.
    code, out, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir, "--limit", "50", "--json",
                              "--iw-samples", "0", "--trust-module", name], capsys)  # fmt: skip
    assert code == 0, err
    assert marker.exists() and f"{name}:SparsePrior" in out


@pytest.mark.parametrize(
    "target, message",
    [
        ("pyro_vae.data.mnist:os.system", "not a Prior, Likelihood or Guide class"),  # reached through a module attribute
        ("pyro_vae.model.priors:torch.load", "not a Prior, Likelihood or Guide class"),
        ("pyro_vae.model.networks:MLPEncoder", "not a Prior, Likelihood or Guide class"),  # ours, but not a component
        ("pyro_vae.model.priors:Prior.__subclasses__", "is not 'module:ClassName'"),
        ("pyro_vae.model.priors:Bernoulli", "not a Prior, Likelihood or Guide class"),  # no such name there
        ("pyro_vae:StandardNormal", "defined in pyro_vae.model.priors"),  # a re-export, not where it is defined
        ("..priors:StandardNormal", "is not 'module:ClassName'"),
        ("os", "is not 'module:ClassName'"),
        ("__main__:MyPrior", "defined in a script"),
    ],
)
def test_targets_that_resolve_to_anything_but_a_component_class(target, message):
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build({"target": target, "args": [], "kwargs": {}})


def test_arguments_must_be_plain_data():
    with pytest.raises(CheckpointError, match="not plain data"):
        build({"target": "pyro_vae.model.priors:StandardNormal", "args": [torch.tensor(3)], "kwargs": {}})
    with pytest.raises(CheckpointError, match="cannot rebuild"):
        build({"target": "pyro_vae.model.priors:StandardNormal", "args": [], "kwargs": {"command": "rm -rf /"}})
    assert build({"target": "pyro_vae.model.priors:StandardNormal", "args": [3], "kwargs": {}}).latent_dim == 3


def test_trust_module_names_are_checked(trained, capsys):
    code, _, err = run_cli(["sample", "--checkpoint", trained.checkpoint_path, "--out", "x.png",
                            "--trust-module", "os; rm -rf /"], capsys)  # fmt: skip
    assert_one_line_error(code, err, "is not a module name")
