r"""The semi-supervised VAE, M2 (Kingma, Rezende, Mohamed & Welling 2014): the label is a latent variable, observed
for some images.

.. math::
    p_\theta(x, y, z) = p(y)\, p(z)\, p_\theta(x \mid y, z), \quad p(y) = \mathrm{Cat}(1/K), \qquad
    q_\phi(y, z \mid x) = q_\phi(y \mid x)\, q_\phi(z \mid x, y)

For a labelled image the bound is on :math:`\log p(x, y)`,
:math:`\mathcal L(x, y) = \mathbb E_{q(z \mid x, y)}[\log p(x \mid y, z)] + \log p(y) - \mathrm{KL}(q(z \mid x, y)
\,\|\, p(z))`. For an unlabelled image ``y`` is summed out exactly,

.. math:: \mathcal U(x) = \sum_y q(y \mid x)\, \mathcal L(x, y) + \mathcal H(q(y \mid x)) \;\le\; \log p(x),

which is what Pyro's ``TraceEnum_ELBO`` forms when the guide's ``y`` site is enumerated in parallel
(``infer={"enumerate": "parallel"}``). Nothing in the bound trains the classifier :math:`q(y \mid x)` on labelled
images, so training adds the paper's :math:`\alpha \log q(y \mid x)` for them (``classifier_weight``), an observed
site of the model present only while the model is in training mode (``vae.train()``): no bound includes it.

A batch mixes both kinds (labels packed in, :data:`~pyro_vae.model.labels.UNLABELLED` where hidden); each program
splits its rows into a ``labelled`` and an ``unlabelled`` plate. Networks: the conditional VAE's encoder and decoder
(:class:`~pyro_vae.model.conditional.ConditionalVAE`) and a classifier, the encoder's architecture with ``K`` outputs.
"""

from __future__ import annotations

from typing import ClassVar

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.params import param_with_module_name
from torch import Tensor

from ..errors import ConfigError, DataError
from .conditional import ConditionalVAE
from .networks import make_encoder
from .vae import _kl_weight

PARTS = ("labelled", "unlabelled")


class SemiSupervisedVAE(ConditionalVAE):
    """M2: :class:`ConditionalVAE`'s networks, the label a latent variable summed out where it is not given."""

    structure = "semi-supervised"
    bound_of = "log p(x)"
    terms = ("E_q[log p(x|y,z)]", "KL(q(y,z|x) || p(y,z))")
    enumerates: ClassVar[bool] = True

    def __init__(self, *args, classifier_weight: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.classifier_weight = float(classifier_weight)
        self.classifier = make_encoder(self.net_config, len(self.class_names), self.image_shape)
        self._pyro_modules["classifier"] = self.classifier
        self._pyro_params["classifier"] = [
            (param_with_module_name("classifier", n), p) for n, p in self.classifier.named_parameters()
        ]

    def check_labels(self, labels: Tensor | None, n: int) -> None:
        """Labels are optional here (the bounds are on log p(x); labels only score the classifier); given ones must be
        classes or ``-1`` (hidden). A run's training images need labels: that is checked where its classes are read."""
        if labels is None:
            return
        if n and int(labels.min()) < -1:
            raise DataError(f"a label {int(labels.min())}: labels are classes 0..{len(self.class_names) - 1} or -1")
        super().check_labels(labels.clamp(min=0), n)

    def observations(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The batch for images ``x`` with ``labels`` (``None``: every label hidden, as the bounds on log p(x) see
        them)."""
        return super().observations(x, torch.full(x.shape[:1], -1, device=x.device) if labels is None else labels)

    def bound_batch(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Every label hidden: the bounds are on log p(x), ``y`` summed out (the labels score the classifier)."""
        return self.observations(x, None)

    def completed_labels(self, batch: Tensor) -> Tensor:
        """The batch's labels, the classifier's most probable class where hidden."""
        x, labels = self.split(batch)
        return torch.where(labels >= 0, labels, self.classifier(x).argmax(-1))

    def guide_params(self, batch: Tensor) -> Tensor:
        """:math:`q(z \\mid x, y)`'s parameters at the given label, else at the classifier's most probable class."""
        x = self.split(batch)[0]
        return self.encoder(x, self.one_hot(self.completed_labels(batch), x.dtype))

    @classmethod
    def check_objective(cls, kind: str, guide: type) -> None:
        if kind != "trace":
            raise ConfigError(
                f"--structure {cls.structure} trains TraceEnum_ELBO, the label summed out; --objective {kind} does not "
                "apply (use trace)"
            )

    def objective(self, config):
        """Pyro's ``TraceEnum_ELBO``: the guide's label enumerated in parallel, summed exactly (one plate deep)."""
        self.check_objective(config.kind, type(self.guide_family))
        particles = config.particles
        return TraceEnum_ELBO(  # (a batch of labelled images only has nothing to enumerate: no warning for it)
            max_plate_nesting=1,
            num_particles=particles,
            vectorize_particles=particles > 1,
            strict_enumeration_warning=False,
        )

    def log_densities(self, batch: Tensor):
        raise ConfigError(
            f"--structure {self.structure} has a discrete latent (the label): AIS moves continuous latents only"
        )

    def y_prior(self, like: Tensor) -> dist.Categorical:
        return dist.Categorical(logits=like.new_zeros(len(self.class_names)))

    def classify(self, x: Tensor) -> dist.Categorical:
        r""":math:`q(y \mid x)` for images ``x``."""
        return dist.Categorical(logits=self.classifier(x))

    def _parts(self, batch: Tensor):
        """``(part, images, labels)`` for the labelled and the unlabelled rows present (labels ``None`` for the
        unlabelled)."""
        x, labels = self.split(batch)
        known = labels >= 0
        for part, rows in zip(PARTS, (known, ~known)):
            if bool(rows.any()):
                yield part, x[rows], labels[rows] if part == "labelled" else None

    def model(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``y ~ Cat(1/K)`` (observed where labelled), ``z ~ p(z)``, ``x ~ p(x | y, z)``; while training, also
        ``classifier_weight * log q(y | x)`` for the labelled rows."""
        self._register("decoder", "prior", "likelihood", "classifier")
        for part, x, labels in self._parts(batch):
            with pyro.plate(part, x.shape[0]):
                y = pyro.sample(f"y_{part}", self.y_prior(x), obs=labels)
                with _kl_weight(kl_scale):
                    z = pyro.sample(f"z_{part}", self.prior())
                pyro.sample(f"x_{part}", self.likelihood(self.decode(z, y)), obs=x)
                if labels is not None and self.training and self.classifier_weight:
                    with poutine.scale(scale=self.classifier_weight):
                        pyro.sample("y_classified", self.classify(x), obs=labels)

    def guide(self, batch: Tensor, kl_scale: float | Tensor = 1.0) -> None:
        """``y ~ q(y | x)`` enumerated where not given, ``z ~ q(z | x, y)``."""
        self._register("encoder", "guide", "classifier")
        for part, x, labels in self._parts(batch):
            with pyro.plate(part, x.shape[0]):
                y = labels
                if y is None:
                    y = pyro.sample(f"y_{part}", self.classify(x), infer={"enumerate": "parallel"})
                with _kl_weight(kl_scale):
                    pyro.sample(f"z_{part}", self.guide_family(self.encoder(x, self.one_hot(y, x.dtype))))
