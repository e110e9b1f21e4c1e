"""A checkpoint (or config file) is data: it names components, and only trusted modules are imported."""

import sys

import pytest
import torch
from test_cli import assert_one_line_error, run_cli

from pyro_vae import ComponentConfig, ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.model.rebuild import resolve


def _crafted(trained, tmp_path, site: str, target_spec: dict):
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    ckpt["config"]["model"][site] = target_spec
    path = tmp_path / f"crafted_{site}.pt"
    torch.save(ckpt, path)
    return path


def _attacks(marker):
    return {
        "os:system": {"name": "system", "module": "os", "command": f"touch {marker}"},
        "posix:system": {"name": "system", "module": "posix"},
        "subprocess:run": {"name": "run", "module": "subprocess", "args": ["touch", str(marker)]},
        "builtins:exec": {"name": "exec", "module": "builtins"},
    }


@pytest.mark.parametrize("attack", ["os:system", "posix:system", "subprocess:run", "builtins:exec"])
@pytest.mark.parametrize("site", ["prior", "likelihood", "guide"])
def test_crafted_targets_never_run(attack, site, trained, tmp_path, data_dir, capsys):
    marker = tmp_path / "pwned"
    path = _crafted(trained, tmp_path, site, _attacks(marker)[attack])
    for command in (["elbo", "--limit", "50", "--iw-samples", "0"], ["sample", "--out", tmp_path / "s.png"]):
        code, _, err = run_cli(
            [command[0], "--checkpoint", path, "--data-dir", data_dir, *command[1:]]
            if command[0] == "elbo"
            else [command[0], "--checkpoint", path, *command[1:]],
            capsys,
        )
        assert_one_line_error(code, err, "not trusted")
        assert not marker.exists()
    code, _, err = run_cli(
        [
            "train",
            "--resume",
            path,
            "--epochs",
            "3",
            "--data-dir",
            data_dir,
            "--out",
            tmp_path / "resumed",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "not trusted")
    assert not marker.exists() and not (tmp_path / "resumed" / "ckpt.pt").exists()


EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).touch()  # import-time code: must never run unless trusted

from pyro_vae import StandardNormal


class SparsePrior(StandardNormal):
    pass
"""


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
    path = _crafted(trained, tmp_path, "prior", {"name": "SparsePrior", "module": name})
    code, _, err = run_cli(["elbo", "--checkpoint", path, "--data-dir", data_dir, "--limit", "50"], capsys)
    assert_one_line_error(code, err, f"pass --trust-module {name}")
    assert name not in sys.modules and not marker.exists()
    # Trusting some other module does not trust this one.
    code, _, err = run_cli(
        ["elbo", "--checkpoint", path, "--data-dir", data_dir, "--limit", "50", "--trust-module", "something_else"],
        capsys,
    )
    assert_one_line_error(code, err, "not trusted")
    assert name not in sys.modules
    # Trusted explicitly, the same checkpoint loads and evaluates.
    code, out, err = run_cli(
        [
            "elbo",
            "--checkpoint",
            path,
            "--data-dir",
            data_dir,
            "--limit",
            "50",
            "--json",
            "--iw-samples",
            "0",
            "--trust-module",
            name,
        ],
        capsys,
    )
    assert code == 0, err
    assert marker.exists() and f"{name}:SparsePrior" in out
    # The same rules hold for a config file: train --config names the module, and must trust it.
    config = tmp_path / "config.toml"
    config.write_text(f'[model.prior]\nname = "SparsePrior"\nmodule = "{name}"\n')
    sys.modules.pop(name, None)
    marker.unlink()
    code, _, err = run_cli(["train", "--config", config, "--data-dir", data_dir, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, f"pass --trust-module {name}")
    assert code == 2 and not marker.exists()


@pytest.mark.parametrize(
    "name, module, message",
    [
        ("system", "os", "not trusted"),
        ("MLPEncoder", "pyro_vae.model.networks", "defines no prior class"),  # ours, but not a component
        ("os.system", "pyro_vae.data.vae_data", "defines no prior class"),  # reached through a module attribute
        ("Prior.__subclasses__", "pyro_vae.model.priors", "defines no prior class"),
        ("standard-normal", "pyro_vae.model.likelihoods", "defines no prior class"),  # registered, but elsewhere
        ("StandardNormal", None, "must be one of standard-normal"),  # pyro-vae's are found by name only
        ("standard-normal", "..priors", "is not a module name"),
        ("MyPrior", "__main__", "defined in a script"),
    ],
)
def test_names_that_resolve_to_anything_but_a_component_class(name, module, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        resolve("prior", name, module)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_components": torch.tensor(3)}, "must be an integer"),
        ({"command": "rm -rf /"}, "does not apply"),
        ({"num_components": [3]}, "must be an integer"),
        ({"latent_dim": 3}, "does not apply"),
    ],
)
def test_options_must_be_declared_plain_values(options, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(prior=ComponentConfig("mog", options)).validate()
    assert (
        ModelConfig(latent_dim=3, prior=ComponentConfig("mog", {"num_components": 3}))
        .build(image_shape=(1, 28, 28))
        .prior.latent_dim
        == 3
    )


def test_trust_module_names_are_checked(trained, capsys):
    code, _, err = run_cli(
        ["sample", "--checkpoint", trained.checkpoint_path, "--out", "x.png", "--trust-module", "os; rm -rf /"], capsys
    )
    assert_one_line_error(code, err, "is not a module name")
