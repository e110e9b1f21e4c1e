"""Library calls leave the process as they found it: glibc's malloc settings, the garbage collector's frozen
objects and torch's thread count; each changes only under a RuntimePolicy that asks for it (the controls)."""

import gc

import pytest
import torch
from conftest import small_run

from pyro_vae import RuntimePolicy, evaluate, runtime_policy
from pyro_vae.runtime import heap
from pyro_vae.runtime.threads import ThreadBudget
from pyro_vae.training.callbacks import Callback


@pytest.fixture
def mallopt_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "_LIBC", object())  # (as if on glibc, wherever the test runs)
    monkeypatch.setattr(heap, "_mallopt", lambda param, value: calls.append((param, value)))
    monkeypatch.setattr(heap, "_trim", lambda: calls.append("trim"))
    return calls


class Watch(Callback):
    """What the process looked like during each step."""

    def __init__(self) -> None:
        self.freeze_counts, self.threads = set(), set()

    def on_step_end(self, trainer, epoch, step, loss) -> None:
        self.freeze_counts.add(gc.get_freeze_count())
        self.threads.add(torch.get_num_threads())


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("policy, changed", [(None, False), (RuntimePolicy(reuse_heap=True), True)])
def test_evaluate_sets_malloc_only_when_asked(tmp_path, data_dir, mallopt_calls, policy, changed):
    trainer = small_run(tmp_path, data_dir, epochs=1)
    trainer.lock.release()
    x = trainer.data.images["val"][:50]
    if policy is None:
        evaluate(trainer.vae, x, iw_samples=4)
    else:
        with runtime_policy(policy):
            evaluate(trainer.vae, x, iw_samples=4)
    assert bool(mallopt_calls) == changed


@pytest.mark.parametrize("policy", [None, RuntimePolicy(freeze_gc=True, thread_budget=True)])
def test_fit_leaves_gc_and_threads_as_they_were(tmp_path, data_dir, two_threads, monkeypatch, policy):
    monkeypatch.setattr(ThreadBudget, "others", lambda self: float(len(self.cpus)))  # every CPU busy elsewhere
    watch = Watch()
    trainer = small_run(tmp_path, data_dir, epochs=1, callbacks=[watch])
    frozen = gc.get_freeze_count()
    if policy is None:
        trainer.fit()
        assert watch.freeze_counts == {frozen} and watch.threads == {2}
    else:  # the controls: the policy does change both while training
        with runtime_policy(policy):
            trainer.fit()
        assert min(watch.freeze_counts) > frozen and watch.threads == {1}
    assert gc.get_freeze_count() == frozen and torch.get_num_threads() == 2


def test_a_callers_frozen_objects_stay_frozen(tmp_path, data_dir):
    trainer = small_run(tmp_path, data_dir, epochs=1)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with runtime_policy(RuntimePolicy(freeze_gc=True)):
            trainer.fit()
        assert gc.get_freeze_count() > frozen // 2  # not unfrozen on the way out (0 if it were; some died)
    finally:
        gc.unfreeze()


def test_the_policy_is_scoped_to_its_block():
    from pyro_vae.runtime.policy import current_policy

    with runtime_policy(RuntimePolicy.command_line()):
        assert current_policy().reuse_heap
    assert current_policy() == RuntimePolicy()
