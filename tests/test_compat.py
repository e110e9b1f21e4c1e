"""Each private torch/Pyro name pyro-vae uses (pyro_vae.runtime.compat) taken away: the fallback trains and
evaluates, with the same numbers where it draws the same noise."""

import math
import sys

import pytest
import torch
import torch.distributions.utils as distribution_utils
import torch.optim.optimizer as optimizer_module
from conftest import small_run

from pyro_vae import evaluate
from pyro_vae.inference import fast_svi
from pyro_vae.runtime import compat


def trained(tmp_path, data_dir, name: str, **options) -> tuple[dict, float]:
    trainer = small_run(tmp_path / name, data_dir, epochs=1, **options)
    trainer.fit()
    elbo = evaluate(trainer.vae, trainer.data.images["val"][:100], iw_samples=2, seed=0).summary()["elbo"]
    return {k: v.clone() for k, v in trainer.vae.state_dict().items()}, elbo


def assert_same(a: tuple[dict, float], b: tuple[dict, float]) -> None:
    assert a[1] == b[1]
    for key in a[0]:
        torch.testing.assert_close(a[0][key], b[0][key], rtol=0, atol=0)


class without:
    """``module`` as seen by pyro_vae.runtime.compat in a release that lacks the private name ``gone``."""

    def __init__(self, module, gone: str) -> None:
        self._module, self._gone = module, gone

    def __getattr__(self, name: str):
        if name == self._gone:
            raise AttributeError(name)
        return getattr(self._module, name)


@pytest.fixture
def fused_steps(monkeypatch):
    """How many steps took the two-kernel shortcut."""
    taken = []
    step = fast_svi.fused_adam_step
    monkeypatch.setattr(fast_svi, "fused_adam_step", lambda opt: taken.append(step(opt)) or taken[-1])
    return taken


@pytest.mark.parametrize("gone", ["_fused_adam_", "_foreach_add_", "hooks"])
def test_adam_without_its_private_kernels_or_hooks_takes_the_public_step(
    tmp_path, data_dir, monkeypatch, gone, fused_steps
):
    reference = trained(tmp_path, data_dir, "with")
    assert any(fused_steps)  # the control: with every name there, the shortcut is taken
    fused_steps.clear()
    # (a torch that renamed the name: torch's own Adam keeps working, pyro-vae's lookup finds nothing)
    if gone == "hooks":
        monkeypatch.setattr(compat, "optimizer_module", without(optimizer_module, "_global_optimizer_pre_hooks"))
    else:
        monkeypatch.setattr(compat, "torch", without(torch, gone))
    assert_same(trained(tmp_path, data_dir, "without"), reference)
    assert fused_steps and not any(fused_steps)


def test_noise_without_the_private_standard_normal_is_the_same_draw(monkeypatch):
    torch.manual_seed(3)
    private = compat.standard_normal([4, 5], torch.float32, torch.device("cpu"))
    monkeypatch.delattr(distribution_utils, "_standard_normal")
    torch.manual_seed(3)
    assert torch.equal(compat.standard_normal([4, 5], torch.float32, torch.device("cpu")), private)
    torch.manual_seed(4)
    assert not torch.equal(compat.standard_normal([4, 5], torch.float32, torch.device("cpu")), private)


def test_the_public_scale_tril_has_the_private_values(monkeypatch):
    cov = torch.tensor([[2.0, 0.3], [0.3, 1.0]])
    fn = torch.distributions.MultivariateNormal(torch.zeros(3, 2), covariance_matrix=cov)
    private = compat.scale_tril(fn)
    monkeypatch.delattr(torch.distributions.MultivariateNormal, "_unbroadcasted_scale_tril", raising=False)
    public = compat.scale_tril(type("MVN", (), {"scale_tril": fn.scale_tril})())
    assert torch.equal(public, private.expand(3, 2, 2)) and public.shape != private.shape


def test_without_inductor_the_step_is_not_compiled_and_says_why(tmp_path, data_dir, monkeypatch, compiling):
    for name in [m for m in sys.modules if m == "torch._inductor" or m.startswith("torch._inductor.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch._inductor", None)  # `import torch._inductor` now fails
    trainer = small_run(tmp_path, data_dir, epochs=1)
    trainer.fit()
    assert trainer.svi.compiled is None
    assert "no inductor compiler" in trainer.svi.compile_disabled_reason
    assert math.isfinite(trainer.metrics[-1]["val_elbo"])


def test_without_get_traces_the_step_is_not_compiled_and_says_why(tmp_path, data_dir, monkeypatch, compiling):
    class OtherELBO:  # a Pyro whose Trace_ELBO lost the method
        pass

    with pytest.raises(compat.Missing, match="no _get_traces"):
        compat.elbo_traces(OtherELBO(), None, None, (), {})

    def missing(*args):
        raise compat.Missing("this Pyro's Trace_ELBO has no _get_traces")

    monkeypatch.setattr("pyro_vae.inference.compiled_elbo.elbo_traces", missing)
    trainer = small_run(tmp_path, data_dir, epochs=1)
    trainer.fit()
    assert trainer.svi.compiled is None and "_get_traces" in trainer.svi.compile_disabled_reason


def test_no_private_name_is_imported_when_the_package_loads():
    import ast

    from test_imports import PACKAGES, modules  # (the package's source files, listed once)

    for path in modules(PACKAGES).values():
        if path.name == "compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("torch", "pyro"):
                names = [node.module, *(a.name for a in node.names)]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"] if node.value.id in ("torch", "pyro") else []
            private = [n for n in names if any(p.startswith("_") and not p.startswith("__") for p in n.split("."))]
            assert not private, f"{path.name}:{node.lineno} uses {private}"
