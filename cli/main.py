"""``pyro-vae``: the command line, a thin shell over :mod:`pyro_vae.pipeline`.

Every error caused by input ends as one line on stderr and a non-zero exit: 2 for a bad option,
1 for a bad file/dataset/combination, 3 when the Pyro and analytic ELBOs disagree, 130 on Ctrl-C.
"""

from __future__ import annotations

import json
import math
import sys

import click
import pyro
from click.core import ParameterSource

from pyro_vae.data import BINARIZATIONS, DATASETS, DataConfig
from pyro_vae.errors import AgreementError, PyroVAEError
from pyro_vae.guides import GUIDES, IAFGuide
from pyro_vae.likelihoods import LIKELIHOODS, Gaussian, Laplace
from pyro_vae.networks import ACTIVATIONS, NetConfig
from pyro_vae.priors import FLOW_TRANSFORMS, PRIORS, FlowPrior, MixtureOfGaussians, VampPrior
from pyro_vae.train import LR_SCHEDULES, OBJECTIVES, TrainConfig

POSITIVE = click.IntRange(min=1)


class HiddenSizes(click.ParamType):
    """``400`` or ``512,256``: hidden layer widths, each positive."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not sizes or min(sizes) < 1:
            self.fail(f"hidden sizes must be positive, got {value!r}", param, ctx)
        return sizes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-vae")
def cli() -> None:
    """Variational autoencoders as Pyro model/guide pairs, trained with SVI."""


# Component options, and the (option, choices) they apply to.
APPLIES_TO = {
    "sigma": [("likelihood", ("gaussian", "laplace"))],
    "learn_sigma": [("likelihood", ("gaussian", "laplace"))],
    "prior_components": [("prior", ("mog", "vamp"))],
    "flow_transform": [("prior", ("flow",))],
    "flow_steps": [("prior", ("flow",)), ("guide", ("iaf",))],
}


def _check_component_options(ctx: click.Context, opts: dict) -> None:
    """Refuse an explicitly given option that the chosen components would ignore, and impossible pairs."""
    for option, users in APPLIES_TO.items():
        used = any(opts[kind] in names for kind, names in users)
        if not used and ctx.get_parameter_source(option) == ParameterSource.COMMANDLINE:
            targets = " or ".join(f"--{kind} {' or '.join(names)}" for kind, names in users)
            raise click.UsageError(f"--{option.replace('_', '-')} only applies to {targets}")
    if opts["prior"] == "vamp" and opts["guide"] == "iaf":
        raise click.UsageError(
            "--prior vamp with --guide iaf would invert the flow for every pseudo-input at every step; "
            "use --guide diagonal or full-cov with the VampPrior"
        )


def _components(opts: dict):
    """The prior, likelihood and guide family named by the options."""
    d = opts["latent_dim"]
    if opts["prior"] in ("mog", "vamp"):
        prior_cls = MixtureOfGaussians if opts["prior"] == "mog" else VampPrior
        k = opts["prior_components"]
        prior = prior_cls(d) if k is None else prior_cls(d, num_components=k)
    elif opts["prior"] == "flow":
        prior = FlowPrior(d, num_flows=opts["flow_steps"], transform=opts["flow_transform"])
    else:
        prior = PRIORS[opts["prior"]](d)
    if opts["likelihood"] in ("gaussian", "laplace"):
        cls = Gaussian if opts["likelihood"] == "gaussian" else Laplace
        likelihood = cls(sigma=opts["sigma"], learn_sigma=opts["learn_sigma"])
    else:
        likelihood = LIKELIHOODS[opts["likelihood"]]()
    guide = IAFGuide(d, num_flows=opts["flow_steps"]) if opts["guide"] == "iaf" else GUIDES[opts["guide"]](d)
    return prior, likelihood, guide


# Options that may differ on --resume; every other option is fixed by the checkpoint.
RESUMABLE = {"resume", "epochs", "out", "data_dir", "device", "progress"}


@cli.command()
@click.option("--dataset", type=click.Choice(list(DATASETS)), default="mnist", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="torchvision root holding the dataset [default: $PYRO_VAE_DATA or ~/.cache/pyro-vae/data, "
                   "downloaded there if missing]")
@click.option("--binarize", type=click.Choice(BINARIZATIONS), default="dynamic", show_default=True)
@click.option("--val-size", type=click.IntRange(min=0), default=5000, show_default=True,
              help="validation images carved from the end of the training set")
@click.option("--train-limit", type=POSITIVE, default=None, help="use only the first N training images")
@click.option("--likelihood", type=click.Choice(list(LIKELIHOODS)), default="bernoulli", show_default=True)
@click.option("--sigma", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="gaussian/laplace likelihood: the fixed scale (or the initial one with --learn-sigma)")
@click.option("--learn-sigma", is_flag=True, help="gaussian/laplace likelihood: learn one scale per pixel")
@click.option("--prior", type=click.Choice(list(PRIORS)), default="standard-normal", show_default=True)
@click.option("--prior-components", type=POSITIVE, default=None,
              help="mog: mixture components [default 10]; vamp: pseudo-inputs [default 500]")
@click.option("--flow-steps", type=POSITIVE, default=2, show_default=True,
              help="autoregressive transforms in --prior flow / --guide iaf")
@click.option("--flow-transform", type=click.Choice(list(FLOW_TRANSFORMS)), default="affine", show_default=True,
              help="--prior flow: Pyro's affine or spline autoregressive transform")
@click.option("--guide", type=click.Choice(list(GUIDES)), default="diagonal", show_default=True,
              help="q(z|x): diagonal Gaussian, full-covariance Gaussian, or inverse autoregressive flow")
@click.option("--net", type=click.Choice(["mlp", "conv"]), default="mlp", show_default=True)
@click.option("--latent-dim", type=POSITIVE, default=20, show_default=True)
@click.option("--hidden", type=HiddenSizes(), default="400", show_default=True,
              help="MLP hidden widths (e.g. 512,256); for conv, the dense layer's width")
@click.option("--activation", type=click.Choice(list(ACTIVATIONS)), default="relu", show_default=True)
@click.option("--epochs", type=POSITIVE, default=10, show_default=True, help="total epochs (also on --resume)")
@click.option("--batch-size", type=POSITIVE, default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant", show_default=True,
              help="iwae: Burda et al. 2016's, stage i=0..7 lasts 3^i epochs at lr*10^(-i/7) (3280 epochs)")
@click.option("--jit/--no-jit", default=True, show_default=True,
              help="--objective trace: trace the ELBO once per batch shape and replay it (JitTrace_ELBO); "
                   "falls back to eager Pyro, with a note, if the model cannot be traced")
@click.option("--adam-eps", type=click.FloatRange(min=0, min_open=True), default=1e-8, show_default=True,
              help="Adam's epsilon (the IWAE paper used 1e-4)")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="trace", show_default=True,
              help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (closed-form KL where one exists); "
                   "iwae: RenyiELBO(alpha=0), the IWAE bound with --particles samples")
@click.option("--particles", type=POSITIVE, default=1, show_default=True,
              help="samples per image in the objective (vectorised)")
@click.option("--beta", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="KL weight (beta-VAE); the target of the warm-up")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="ramp the KL weight linearly from --warmup-start to --beta over N epochs")
@click.option("--warmup-start", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="KL weight the warm-up starts from")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--out", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="run folder for ckpt.pt and metrics.jsonl")
@click.option("--checkpoint-every", type=POSITIVE, default=1, show_default=True, help="epochs between checkpoints")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="continue the run in this checkpoint (to --epochs in total)")
@click.option("--overwrite", is_flag=True, help="replace a run already in --out")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train a VAE with SVI; writes OUT/ckpt.pt and OUT/metrics.jsonl."""
    from pyro_vae import pipeline

    log = lambda message: click.echo(message, err=True)  # noqa: E731
    if opts["resume"]:
        fixed = [name for name in opts if name not in RESUMABLE
                 and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]  # fmt: skip
        if fixed:
            names = ", ".join("--" + n.replace("_", "-") for n in fixed)
            raise click.UsageError(f"{names} cannot change on --resume (the checkpoint fixes them)")
        explicit_out = ctx.get_parameter_source("out") == ParameterSource.COMMANDLINE
        trainer = pipeline.resume_run(
            opts["resume"], out_dir=opts["out"] if explicit_out else None, data_dir=opts["data_dir"],
            device=opts["device"], progress=opts["progress"], log=log,
            epochs=opts["epochs"] if ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE else None,
        )  # fmt: skip
        log(f"resuming {opts['resume']} at epoch {trainer.epoch}")
    else:
        _check_component_options(ctx, opts)
        if opts["warmup_epochs"] == 0 and ctx.get_parameter_source("warmup_start") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--warmup-start needs --warmup-epochs")
        net = NetConfig(opts["net"], opts["latent_dim"], opts["hidden"], opts["activation"])
        train_config = TrainConfig(
            opts["epochs"], opts["batch_size"], opts["lr"], opts["seed"], opts["objective"], opts["checkpoint_every"],
            opts["particles"], opts["beta"], opts["warmup_epochs"], opts["warmup_start"], opts["lr_schedule"],
            opts["adam_eps"], opts["jit"],
        )  # fmt: skip
        train_config.validate()  # a bad combination fails before any data is read
        pyro.set_rng_seed(opts["seed"])  # mixture means, pseudo-inputs and flows start from the seed too
        prior, likelihood, guide = _components(opts)
        trainer = pipeline.start_run(
            DataConfig(opts["dataset"], opts["binarize"], opts["val_size"], opts["train_limit"]),
            net, prior, likelihood, train_config,
            opts["out"], guide=guide, data_dir=opts["data_dir"], device=opts["device"], overwrite=opts["overwrite"],
            progress=opts["progress"], log=log,
        )  # fmt: skip
    log(f"training on {trainer.data.device}: {trainer.data.config.describe()}, "
        f"{trainer.data.images['train'].shape[0]} training images")  # fmt: skip
    trainer.fit()
    log(f"wrote {trainer.checkpoint_path} and {trainer.out_dir / 'metrics.jsonl'}")


def _format_table(info: dict, s: dict) -> str:
    pm = lambda key: f"{s[key]:10.3f} ± {s[key + '_stderr']:.3f}"  # noqa: E731
    lines = [
        f"{info['data']}",
        f"split={info['split']}  n={s['n']}  checkpoint epoch {info['epoch']}  seed={s['seed']}  "
        f"device={info['device']}",
        f"prior {info['prior']}, likelihood {info['likelihood']}, guide {info['guide']}",
        "all values in nats per image, as log-likelihood bounds (higher is better)",
        f"  ELBO, Pyro Trace_ELBO ({s['num_particles']} particle(s))  {pm('elbo')}",
        f"  ELBO, hand-written analytic KL        {pm('elbo_analytic')}",
        f"  agreement z (paired, |z| < 4 passes)  {s['agreement_z']:10.2f}",
        f"  reconstruction E_q[log p(x|z)]        {s['recon']:10.3f}",
        f"  KL(q(z|x) || p(z)) [{s['kl_method']}]{' ' * (17 - len(s['kl_method']))}{s['kl']:10.3f}",
    ]
    if "iwae" in s:
        lines.append(f"  IWAE bound, K={s['iwae_k']:<22} {pm('iwae')}")
    if "elbo_bits_per_dim" in s:
        iwae_bpd = f", IWAE {s['iwae_bits_per_dim']:.4f}" if "iwae_bits_per_dim" in s else ""
        lines.append(f"  bits/dim (discrete likelihood)       ELBO {s['elbo_bits_per_dim']:.4f}{iwae_bpd}")
    if s["kl_method"] == "monte-carlo":
        lines.append("  note: this prior/guide pair has no closed-form KL, so the hand-written ELBO uses a Monte Carlo")
        lines.append("        KL on the same draws: the check covers the likelihood, the guide density and sampling")
    return "\n".join(lines)


@cli.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="a ckpt.pt from train")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--num-particles", type=POSITIVE, default=1, show_default=True,
              help="samples per image for the ELBO estimates")
@click.option("--iw-samples", type=click.IntRange(min=0), default=100, show_default=True,
              help="K of the importance-weighted bound (0 skips it; the IWAE paper uses 5000)")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="only the first N images of the split")
@click.option("--batch-size", type=POSITIVE, default=500, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def elbo(**opts) -> None:
    """Evaluate a checkpoint: Pyro ELBO, analytic-KL ELBO, their agreement, and the IWAE bound."""
    from pyro_vae import pipeline

    as_json = opts.pop("as_json")
    result, info = pipeline.evaluate_checkpoint(opts.pop("checkpoint"), **opts)
    summary = result.summary()
    if as_json:
        # NaN (e.g. the standard error of one image) is not JSON: write null.
        fields = {**info, **summary}
        plain = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()}
        click.echo(json.dumps(plain, allow_nan=False))
    else:
        click.echo(_format_table(info, summary))
    result.check_agreement()


def _fail(message: str, code: int) -> None:
    click.echo(f"pyro-vae: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group and turn input errors into one line and an exit code."""
    try:
        code = cli.main(args=argv, prog_name="pyro-vae", standalone_mode=False)
    except click.UsageError as exc:
        _fail(exc.format_message(), 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted (checkpoints already written are kept)", 130)
    except AgreementError as exc:
        _fail(str(exc), 3)
    except PyroVAEError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
