"""Components used by the tests, importable as ``helper_components`` (tests/ is on sys.path)."""

from pyro_vae import Bernoulli, StandardNormal
from pyro_vae.guides import IAFGuide


class WrongKLPrior(StandardNormal):
    """Negative control: the closed-form KL with its factor 0.5 dropped."""

    def kl(self, q_loc, q_scale_tril):
        return 2 * super().kl(q_loc, q_scale_tril)


class WrongLogProbBernoulli(Bernoulli):
    """Negative control: a hand-written log-likelihood averaged over pixels instead of summed."""

    def log_prob(self, params, x):
        return super().log_prob(params, x) / x.shape[-1]


class NoJacobianIAFGuide(IAFGuide):
    """Negative control: the flow guide's hand-written log q without the flows' log-Jacobians."""

    def rsample_with_log_q(self, params, eps):
        z, _ = super().rsample_with_log_q(params, eps)
        return z, self.base.rsample_with_log_q(params, eps)[1]
