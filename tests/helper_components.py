"""Components used by the tests, importable as ``helper_components`` (tests/ is on sys.path)."""

from pyro_vae import Bernoulli, StandardNormal


class WrongKLPrior(StandardNormal):
    """Negative control: the closed-form KL with its factor 0.5 dropped."""

    def kl(self, q_loc, q_scale):
        return 2 * super().kl(q_loc, q_scale)


class WrongLogProbBernoulli(Bernoulli):
    """Negative control: a hand-written log-likelihood averaged over pixels instead of summed."""

    def log_prob(self, params, x):
        return super().log_prob(params, x) / x.shape[-1]
