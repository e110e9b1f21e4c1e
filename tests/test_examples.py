"""The README's user script: a custom prior and likelihood, trained, saved, and rebuilt by the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

EXAMPLES = ROOT / "examples"
SCRIPT = Path(sys.executable).with_name("pyro-vae")


def _run(args, *, with_examples: bool):
    env = dict(os.environ)
    if with_examples:
        env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")])
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_custom_prior_and_likelihood_train_and_reload(tmp_path, data_dir):
    out = tmp_path / "custom"
    trained = _run(
        [
            sys.executable,
            EXAMPLES / "train_custom.py",
            "--data-dir",
            data_dir,
            "--epochs",
            "1",
            "--train-limit",
            "1000",
            "--out",
            out,
        ],
        with_examples=True,
    )
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["kl_method"] == "monte-carlo" and abs(summary["agreement_z"]) < 4

    ckpt = torch_load(out / "ckpt.pt")
    assert ckpt["config"]["model"]["prior"] == {"name": "laplace", "module": "my_components"}
    assert ckpt["config"]["model"]["likelihood"] == {
        "name": "laplace-one-scale",
        "module": "my_components",
        "init_scale": 0.1,
    }
    assert "likelihood.log_scale" in ckpt["model_state"]

    args = [
        SCRIPT,
        "elbo",
        "--checkpoint",
        out / "ckpt.pt",
        "--data-dir",
        data_dir,
        "--limit",
        "300",
        "--json",
        "--iw-samples",
        "10",
    ]
    # The checkpoint names code outside pyro_vae: refused until the user trusts that module.
    untrusted = _run(args, with_examples=True)
    assert untrusted.returncode == 1 and "Traceback" not in untrusted.stderr
    assert "--trust-module my_components" in untrusted.stderr
    trusted = [*args, "--trust-module", "my_components"]
    result = _run(trusted, with_examples=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kl_method"] == "monte-carlo"
    # Trusted but not on the path: the error says what is missing.
    missing = _run(trusted, with_examples=False)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "make module 'my_components' importable" in missing.stderr


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "components.md").read_text()
    for name in ("my_components.py", "train_custom.py", "swap_components.py"):
        body = (EXAMPLES / name).read_text()
        code = body.split('"""', 2)[2].strip() if name in ("train_custom.py", "my_components.py") else body.strip()
        assert code in readme, f"README's copy of examples/{name} is out of date"


def test_beta_vae_warmup_example(tmp_path, data_dir):
    run = _run(
        [
            sys.executable,
            EXAMPLES / "beta_vae_warmup.py",
            "--data-dir",
            data_dir,
            "--epochs",
            "3",
            "--warmup-epochs",
            "2",
            "--beta",
            "4",
            "--train-limit",
            "300",
            "--out",
            tmp_path / "b",
        ],
        with_examples=False,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["beta_per_epoch"] == [2.0, 4.0, 4.0] and abs(summary["agreement_z"]) < 4


def test_short_swap_script_runs(tmp_path, data_dir):
    """The README's script of under 20 lines of code: its own prior and likelihood, trained and evaluated."""
    script = (EXAMPLES / "swap_components.py").read_text()
    assert len([line for line in script.splitlines() if line.strip()]) < 20
    fast = script.replace("train_limit=5000", "train_limit=300").replace('"runs/swap"', repr(str(tmp_path)))
    (tmp_path / "swap.py").write_text(fast)
    run = _run([sys.executable, tmp_path / "swap.py", data_dir], with_examples=False)
    assert run.returncode == 0, run.stderr
    assert "'kl_method': 'monte-carlo'" in run.stdout
