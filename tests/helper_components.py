"""Components used by the tests, importable as ``helper_components`` (tests/ is on sys.path)."""

import torch

from pyro_vae import Bernoulli, Gaussian, StandardNormal
from pyro_vae.model.guides import IAFGuide


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


class PoisonableBernoulli(Bernoulli):
    """Fault injection: once ``poison`` is set, the logits get ``0 * sqrt(0 * params)`` added (value 0,
    gradient NaN: a finite loss with a NaN gradient) or NaN itself (``poison = "loss"``). Train with
    ``jit=False``: a trace would freeze the flag."""

    poison = None

    def forward(self, params):
        if self.poison == "gradient":
            params = params + 0 * torch.sqrt(0 * params)
        elif self.poison == "loss":
            params = params + float("nan")
        return super().forward(params)


class IdentityMeanGaussian(Gaussian):
    """Gaussian pixels whose mean is the decoder's output itself (no sigmoid): with a linear decoder
    (``NetConfig(hidden=())``) the model is linear-Gaussian, so log p(x) and the posterior have closed forms."""

    def forward(self, params):
        loc = params[..., 0, :]
        return torch.distributions.Independent(torch.distributions.Normal(loc, self.sigma().expand_as(loc)), 1)

    def log_prob(self, params, x):
        return self.pixel_log_density(x, params[..., 0, :], self.sigma()).sum(-1)
