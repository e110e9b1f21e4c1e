r"""The VAE as a Pyro model/guide pair: the plain structure ``z -> x``, and the interface every structure keeps.

.. math::
    p_\theta(x, z) = p(z)\, p_\theta(x \mid z), \qquad
    q_\phi(z \mid x) = \text{guide family}\big(\mathrm{encoder}_\phi(x)\big)

``model`` and ``guide`` are ordinary Pyro functions; the networks (and any trainable prior,
likelihood or guide-family parameters) are registered with ``pyro.module`` so ``SVI`` optimises them.

Both take ``kl_scale`` (:math:`\beta`): the latent site is wrapped in ``poutine.scale`` in the model
*and* the guide, so :math:`\log p(z)` and :math:`\log q(z \mid x)` are both weighted and the objective
is :math:`\mathbb E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}`, also when ``TraceMeanField_ELBO``
computes the KL in closed form (it takes the scale from the guide's site).

**A model structure** (this class, :class:`~pyro_vae.model.conditional.ConditionalVAE`, ...; the registry is
:mod:`pyro_vae.model.structures`) is a subclass that keeps this interface, which the trainer, the bounds, the
cross-check, checkpoints and plots use and nothing else:

* ``model(batch, kl_scale)`` and ``guide(batch, kl_scale)``: the Pyro program; its latent site is ``"z"``;
* ``observations(x, labels)``: the batch the program reads, from images and their labels (``labels`` may be
  ``None`` when ``needs_labels`` is false); ``split(batch)``: back to ``(x, labels or None)``;
  ``check_labels(labels, n)``: a split's labels checked once (not at every batch); ``completed_labels(batch)``:
  the labels to decode with;
* ``guide_params(batch)``: the guide family's parameters of :math:`q(z \mid \ldots)` (the encoder's output);
* ``decode(z, labels)``: the likelihood's parameters of :math:`p(x \mid z, \ldots)`; ``generate(n)``: ``n`` latent
  vectors drawn from the model; ``moments(batch, samples)``: the mean and marginal scales of the guide's ``z``;
  ``log_densities(batch)``: :math:`z \mapsto (\log p(x, z), \log q(z \mid x))` at given latent vectors,
  ``draw_latents(batch, draws)``: latent vectors drawn from the guide;
* ``bound_batch(x, labels)``: the batch whose bounds are reported; ``objective(config)``: the Pyro ELBO it trains
  (``check_objective`` refuses one it cannot);
* ``latent_dims``: the sizes of its latent layers, the one next to the data first (one layer here); ``latent_dim`` is
  their sum, the size of the latent vector ``decode``, ``generate`` and ``moments`` deal in;
* ``structure`` (its name in configs), ``needs_labels``, ``bound_of`` (what its bounds bound), ``terms`` (the
  ELBO's two terms, as printed), ``enumerates`` (a label summed out), ``class_names`` (the classes it was built
  for).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import ClassVar

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.params import param_with_module_name
from torch import Tensor, nn

from ..errors import ConfigError
from .guides import DiagonalGaussianGuide, Guide
from .likelihoods import Likelihood
from .networks import NetConfig, make_decoder, make_encoder
from .priors import Prior


def _kl_weight(kl_scale: float | Tensor):
    """``poutine.scale`` on the latent site; no handler at all for the usual weight of 1 (a tensor
    weight, as a traced step passes it, always gets the handler: its value is not known when tracing)."""
    return nullcontext() if isinstance(kl_scale, float) and kl_scale == 1.0 else poutine.scale(scale=kl_scale)


class VAE(nn.Module):
    """A VAE built from a network config, a :class:`Prior`, a :class:`Likelihood` and a :class:`Guide`
    family (default: diagonal Gaussian), for images of ``image_shape`` ``(C, H, W)``. The latent size is the prior's.

    :meth:`pyro_vae.model.config.ModelConfig.build` builds one from a config, passing the latent size to
    every component; a VAE put together by hand is checked to have one latent size throughout. ``class_names``: the
    names of the classes, for a structure with the label in it (the plain VAE takes none)."""

    structure: ClassVar[str] = "vae"
    needs_labels: ClassVar[bool] = False
    bound_of: ClassVar[str] = "log p(x)"  # what its ELBO and IWAE bound from below
    terms: ClassVar[tuple[str, str]] = ("E_q[log p(x|z)]", "KL(q(z|x) || p(z))")  # the ELBO's two terms, as printed
    enumerates: ClassVar[bool] = False  # a label summed out (M2): bounds in pyro_vae.inference.enumerated

    def __init__(
        self,
        net: NetConfig,
        prior: Prior,
        likelihood: Likelihood,
        guide: Guide | None = None,
        *,
        image_shape: tuple[int, int, int],
        class_names: Sequence[str] = (),
        latent_dims: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        net.validate()
        self.latent_dims = tuple(latent_dims) if latent_dims else (prior.latent_dim,)
        self._check_layers()
        self.latent_dim = sum(self.latent_dims)  # the whole latent vector's size (all layers side by side)
        self.image_shape = tuple(image_shape)  # (C, H, W): x is flattened in this order
        self.class_names = tuple(class_names)
        self._check_classes()
        bottom, top = self.latent_dims[0], self.latent_dims[-1]
        if prior.latent_dim != top:
            raise ConfigError(f"the prior has latent_dim={prior.latent_dim} but the top latent layer {top}")
        guide = guide if guide is not None else DiagonalGaussianGuide(bottom)
        if guide.layers == "top-down" and len(self.latent_dims) == 1:
            raise ConfigError(
                f"--guide {guide.name} infers several latent layers top-down: it needs --structure hierarchical"
            )
        if guide.latent_dim != bottom:
            raise ConfigError(f"the guide has latent_dim={guide.latent_dim} but the latent layer it infers {bottom}")
        self.net_config = net
        conditions = len(self.class_names)  # a one-hot label beside the image (encoder) and beside z (decoder)
        self.encoder = make_encoder(net, guide.num_params, self.image_shape, conditions)
        self.decoder = make_decoder(net, bottom + conditions, likelihood.num_params, self.image_shape)
        self.prior = prior
        self.likelihood = likelihood
        self.guide_family = guide
        prior.attach(self.posterior)
        self._pyro_modules = {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "prior": prior,
            "likelihood": likelihood,
            "guide": guide,
        }
        self._pyro_params = {
            name: [(param_with_module_name(name, n), p) for n, p in module.named_parameters() if p.requires_grad]
            for name, module in self._pyro_modules.items()
        }

    def _check_layers(self) -> None:
        if len(self.latent_dims) != 1:
            raise ConfigError(
                f"the {self.structure} structure has one latent layer; {len(self.latent_dims)} layers need "
                "--structure hierarchical"
            )

    def _check_classes(self) -> None:
        if self.class_names:
            raise ConfigError(f"the {self.structure} structure takes no classes (it has no label in it)")

    def model(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``z ~ p(z)``, ``x ~ p(x | z)`` for a batch of flattened images (and labels, in a structure with them)."""
        self._register("decoder", "prior", "likelihood")
        x, labels = self.split(batch)
        with pyro.plate("data", x.shape[0]):
            with _kl_weight(kl_scale):
                z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decode(z, labels)), obs=x)

    def guide(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``z ~ q(z | x)`` from the encoder and the guide family."""
        self._register("encoder", "guide")
        with pyro.plate("data", batch.shape[0]), _kl_weight(kl_scale):
            pyro.sample("z", self.posterior(batch))

    def observations(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The batch :meth:`model` and :meth:`guide` read for images ``x`` (the plain VAE: the images)."""
        return x

    def check_labels(self, labels: Tensor | None, n: int) -> None:
        """:class:`~pyro_vae.errors.DataError` unless ``labels`` suit ``n`` images (once per split, not per batch)."""

    def bound_batch(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The batch whose bounds ``pyro-vae elbo`` and validation report (M2 hides the labels: bounds on log p(x))."""
        return self.observations(x, labels)

    def objective(self, config):
        """The Pyro ELBO to train with, from the run's :class:`~pyro_vae.inference.objectives.ObjectiveConfig`."""
        self.check_objective(config.kind, type(self.guide_family))
        return config.make()

    @classmethod
    def check_objective(cls, kind: str, guide: type) -> None:
        """:class:`ConfigError` when this structure cannot train ``--objective kind`` with guide family ``guide``
        (checked when a run's config is read, before anything is written)."""
        if kind == "iwae-dreg":  # (the guide's density with its parameters held fixed, a reparameterised sample)
            from ..inference.dreg import check_guide_family

            check_guide_family(guide)

    def split(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(images, labels or None)`` of a batch."""
        return batch, None

    def completed_labels(self, batch: Tensor) -> Tensor | None:
        """The labels to decode a batch's images with (M2 fills in hidden ones from its classifier); ``None`` here."""
        return self.split(batch)[1]

    def guide_params(self, batch: Tensor) -> Tensor:
        """The guide family's parameters for each image of ``batch`` (the encoder's output)."""
        return self.encoder(batch)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        r"""The likelihood's parameters of :math:`p(x \mid z)`."""
        return self.decoder(z)

    def generate(self, n: int) -> Tensor:
        """``n`` draws of the latent vector from the model (here ``z ~ p(z)``), from the global torch RNG."""
        return self.prior().sample((n,))

    def draw_latents(self, batch: Tensor, draws: int) -> Tensor:
        """``draws`` latent vectors per image from the guide, ``(draws, n, latent_dim)``, from the global torch RNG."""
        return self.posterior(batch).sample((draws,))

    def log_densities(self, batch: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        r"""For a batch, the function :math:`z \mapsto (\log p(x, z), \log q(z \mid x))` at latent vectors ``z``
        (``(..., n, latent_dim)``, the images broadcast against the leading dimensions), each ``(..., n)`` and
        differentiable in ``z``, with the encoder run once: what annealed importance sampling moves between
        (:mod:`pyro_vae.inference.ais`). :class:`ConfigError` for a guide without a one-pass density (its
        :math:`\log q` at a given ``z`` needs inverting a flow)."""
        if not self.guide_family.one_pass_log_density:
            raise ConfigError(
                f"--guide {self.guide_family.name} has no one-pass density: log q(z | x) at the points AIS visits "
                "would need inverting its flow"
            )
        images, labels = self.split(batch)
        q = self.posterior(batch)

        def densities(z: Tensor) -> tuple[Tensor, Tensor]:
            log_joint = self.prior.log_density(z) + self.likelihood.log_prob(self.decode(z, labels), images)
            return log_joint, q.log_prob(z)

        return densities

    def moments(self, batch: Tensor, samples: int) -> tuple[Tensor, Tensor]:
        r""":math:`\mathbb E_q[z]` and the marginal standard deviations of :math:`q(z \mid x)` for a batch, each
        ``(n, latent_dim)``: read off a Gaussian guide's parameters, else the moments of ``samples`` draws."""
        params = self.guide_params(batch)
        gaussian = self.guide_family.gaussian(params)
        if gaussian is not None:
            loc, scale_tril = gaussian
            return loc, scale_tril.pow(2).sum(-1).sqrt()  # (L L^T)_jj is the squared norm of row j of L
        z = self.guide_family(params).sample((samples,))
        return z.mean(0), z.std(0)

    def _register(self, *names: str) -> None:
        """What ``pyro.module(name, part)`` does, for each named part: ``pyro.param`` on each trainable
        parameter under its module-qualified name. The (name, parameter) pairs are listed once, at
        construction, instead of walking the module tree at every step."""
        for name in names:
            for full_name, param in self._pyro_params[name]:
                pyro.param(full_name, param)

    def posterior(self, batch: Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` for a batch (of images, and labels in a structure with them)."""
        return self.guide_family(self.guide_params(batch))

    def pyro_named_parameters(self) -> dict[str, nn.Parameter]:
        """Each trainable parameter under its param-store name (``"decoder$$$net.0.weight"``)."""
        return {full_name: p for pairs in self._pyro_params.values() for full_name, p in pairs}
