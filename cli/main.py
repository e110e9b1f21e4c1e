"""``pyro-vae``: the command line, a thin shell over :mod:`pyro_vae.pipeline`.

Every error caused by input ends as one line on stderr and a non-zero exit: 2 for a bad option,
1 for a bad file/dataset/combination or a size that cannot fit, 3 when the Pyro and analytic ELBOs
disagree, 130 on Ctrl-C and 143 on SIGTERM (training saves a checkpoint first).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
import pyro
from click.core import ParameterSource

from pyro_vae.data.mnist import BINARIZATIONS, CLASS_NAMES, DATASETS, DataConfig
from pyro_vae.runtime.devices import resolve_device
from pyro_vae.errors import AgreementError, PyroVAEError, RunInterrupted
from pyro_vae.model.guides import GUIDES, IAFGuide
from pyro_vae.model.likelihoods import LIKELIHOODS, Gaussian, Laplace
from pyro_vae.runtime.limits import check_vae_fits
from pyro_vae.model.networks import ACTIVATIONS, NetConfig
from pyro_vae.model.priors import FLOW_TRANSFORMS, PRIORS, FlowPrior, MixtureOfGaussians, VampPrior
from pyro_vae.model.rebuild import trusted_module_names
from pyro_vae.training.trainer import LR_SCHEDULES, OBJECTIVES, TrainConfig
from pyro_vae.model.vae import VAE

POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, 2**32 - 1)  # what numpy, and so pyro.set_rng_seed, accepts
MAX_FLOW_STEPS = 1000  # each step is a network of its own: more would take hours to build
MAX_HIDDEN_LAYERS = 100


def _module_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return trusted_module_names(value)
    except PyroVAEError as exc:
        raise click.BadParameter(str(exc)) from None


# The one way a checkpoint gets to import code outside pyro_vae (see pyro_vae/rebuild.py).
trust_module_option = click.option(
    "--trust-module", "trust_modules", multiple=True, metavar="MODULE", callback=_module_names,
    help="let the checkpoint rebuild components from MODULE (your own code; repeat per module). "
         "Without it only pyro_vae's classes are rebuilt and no other module is imported")  # fmt: skip


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (click lets "nan" and "inf" through a FloatRange)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE_FLOAT = FiniteFloat(min=0, min_open=True)


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
        if len(sizes) > MAX_HIDDEN_LAYERS:
            self.fail(f"at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(sizes)}", param, ctx)
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
RESUMABLE = {"resume", "epochs", "out", "data_dir", "device", "progress", "plot_every", "trust_modules"}


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
@click.option("--sigma", type=POSITIVE_FLOAT, default=0.1, show_default=True,
              help="gaussian/laplace likelihood: the fixed scale (or the initial one with --learn-sigma)")
@click.option("--learn-sigma", is_flag=True, help="gaussian/laplace likelihood: learn one scale per pixel")
@click.option("--prior", type=click.Choice(list(PRIORS)), default="standard-normal", show_default=True)
@click.option("--prior-components", type=POSITIVE, default=None,
              help="mog: mixture components [default 10]; vamp: pseudo-inputs [default 500]")
@click.option("--flow-steps", type=click.IntRange(1, MAX_FLOW_STEPS), default=2, show_default=True,
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
@click.option("--lr", type=POSITIVE_FLOAT, default=1e-3, show_default=True)
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant", show_default=True,
              help="iwae: Burda et al. 2016's, stage i=0..7 lasts 3^i epochs at lr*10^(-i/7) (3280 epochs)")
@click.option("--jit/--no-jit", default=True, show_default=True,
              help="--objective trace: trace the ELBO once per batch shape and replay it (JitTrace_ELBO); "
                   "falls back to eager Pyro, with a note, if the model cannot be traced")
@click.option("--adam-eps", type=POSITIVE_FLOAT, default=1e-8, show_default=True,
              help="Adam's epsilon (the IWAE paper used 1e-4)")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="trace", show_default=True,
              help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (closed-form KL where one exists); "
                   "iwae: RenyiELBO(alpha=0), the IWAE bound with --particles samples")
@click.option("--particles", type=POSITIVE, default=1, show_default=True,
              help="samples per image in the objective (vectorised)")
@click.option("--beta", type=POSITIVE_FLOAT, default=1.0, show_default=True,
              help="KL weight (beta-VAE); the target of the warm-up")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="ramp the KL weight linearly from --warmup-start to --beta over N epochs")
@click.option("--warmup-start", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="KL weight the warm-up starts from")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--out", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="run folder for ckpt.pt and metrics.jsonl")
@click.option("--checkpoint-every", type=POSITIVE, default=1, show_default=True, help="epochs between checkpoints")
@click.option("--resume", type=click.Path(dir_okay=False), default=None,
              help="continue the run in this checkpoint (to --epochs in total)")
@click.option("--overwrite", is_flag=True, help="replace a run already in --out")
@click.option("--plot-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="write reconstruction and sample grids to OUT/plots every N epochs (0: never)")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
@trust_module_option
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
            device=opts["device"], progress=opts["progress"], log=log, trust_modules=opts["trust_modules"],
            epochs=opts["epochs"] if ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE else None,
            plot_every=opts["plot_every"] if ctx.get_parameter_source("plot_every") == ParameterSource.COMMANDLINE
            else None,
        )  # fmt: skip
        log(f"resuming {opts['resume']} at epoch {trainer.epoch}")
    else:
        if opts["trust_modules"]:
            raise click.UsageError("--trust-module only applies to --resume (a new run builds pyro_vae's components)")
        _check_component_options(ctx, opts)
        if opts["warmup_epochs"] == 0 and ctx.get_parameter_source("warmup_start") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--warmup-start needs --warmup-epochs")
        net = NetConfig(opts["net"], opts["latent_dim"], opts["hidden"], opts["activation"])
        train_config = TrainConfig(
            opts["epochs"], opts["batch_size"], opts["lr"], opts["seed"], opts["objective"], opts["checkpoint_every"],
            opts["particles"], opts["beta"], opts["warmup_epochs"], opts["warmup_start"], opts["lr_schedule"],
            opts["adam_eps"], opts["jit"], opts["plot_every"],
        )  # fmt: skip
        train_config.validate()  # a bad combination fails before any data is read
        check_vae_fits(lambda: VAE(net, *_components(opts)), resolve_device(opts["device"]), training=True)
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
    plots = f" and pictures in {trainer.out_dir / 'plots'}" if trainer.config.plot_every else ""
    log(f"wrote {trainer.checkpoint_path} and {trainer.out_dir / 'metrics.jsonl'}{plots}")


def _format_table(info: dict, s: dict) -> str:
    pm = lambda key: f"{s[key]:10.3f} ± {s[key + '_stderr']:.3f}"  # noqa: E731
    k = f"K={s['iwae_k']}  " if "iwae" in s else ""
    lines = [
        f"{info['data']}",
        f"split={info['split']}  n={s['n']}  {k}checkpoint epoch {info['epoch']}  seed={s['seed']}  "
        f"device={info['device']}",
        f"prior {info['prior']}, likelihood {info['likelihood']}, guide {info['guide']}",
        "nats per image, as log-likelihood bounds (higher is better); ± is the standard error over images",
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
    if "active_units" in s:
        lines.append(f"  active units (Var_x E_q[z_u] > {s['active_unit_threshold']:g})  "
                     f"{s['active_units']:5d} of {s['latent_dim']}")  # fmt: skip
    if s["kl_method"] == "monte-carlo":
        lines.append("  note: this prior/guide pair has no closed-form KL, so the hand-written ELBO uses a Monte Carlo")
        lines.append("        KL on the same draws: the check covers the likelihood, the guide density and sampling")
    chunk = f"; IWAE in chunks of {info['iwae_chunk']} particles" if info["iwae_chunk"] else ""
    lines.append(f"took {info['seconds']:.1f} s; peak memory {info['peak_memory_mib']:.0f} MiB "
                 f"({info['peak_memory_of']}){chunk}")  # fmt: skip
    return "\n".join(lines)


def _format_by_class(info: dict, s: dict, rows: dict) -> str:
    names = CLASS_NAMES[info["dataset"]]
    iwae = f"IWAE K={s['iwae_k']}" if "iwae" in s else ""
    lines = [f"per class ({info['split']} split):",
             f"  {'class':<12} {'n':>6} {'ELBO':>18} {iwae:>18} {'recon':>9} {'KL':>8}"]  # fmt: skip
    pm = lambda row, key: f"{row[key]:9.2f} ± {row[key + '_stderr']:5.2f}" if key in row else ""  # noqa: E731
    for label, row in rows.items():
        lines.append(f"  {names[label]:<12} {row['n']:>6} {pm(row, 'elbo'):>18} {pm(row, 'iwae'):>18} "
                     f"{row['recon']:9.2f} {row['kl']:8.2f}")  # fmt: skip
    return "\n".join(lines)


def _json_safe(value):
    """NaN (e.g. the standard error of one image) is not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


@cli.command()
@trust_module_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="a ckpt.pt from train")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--num-particles", type=POSITIVE, default=1, show_default=True,
              help="samples per image for the ELBO estimates")
@click.option("--iw-samples", type=click.IntRange(min=0), default=100, show_default=True,
              help="K of the importance-weighted bound (0 skips it; the IWAE paper uses 5000)")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="only the first N images of the split")
@click.option("--batch-size", type=POSITIVE, default=500, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--by-class", is_flag=True, help="also break the bounds down by class label")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
def elbo(**opts) -> None:
    """Evaluate a checkpoint: Pyro ELBO, analytic-KL ELBO, their agreement, IWAE bound, active units."""
    from pyro_vae import pipeline

    as_json, by_class = opts.pop("as_json"), opts.pop("by_class")
    result, info = pipeline.evaluate_checkpoint(opts.pop("checkpoint"), **opts,
                                                log=lambda message: click.echo(message, err=True))  # fmt: skip
    summary = result.summary()
    rows = result.by_class() if by_class else None
    if as_json:
        fields = {**info, **summary}
        if rows is not None:
            names = CLASS_NAMES[info["dataset"]]
            fields["by_class"] = {label: {"name": names[label], **row} for label, row in rows.items()}
        click.echo(json.dumps(_json_safe(fields), allow_nan=False))
    else:
        click.echo(_format_table(info, summary))
        if rows is not None:
            click.echo(_format_by_class(info, summary, rows))
    result.check_agreement()


@cli.command()
@trust_module_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="a ckpt.pt from train")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the PNGs")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--num-points", type=click.IntRange(min=16), default=5000, show_default=True,
              help="images in the latent scatter (the first N of the split)")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def plot(**opts) -> None:
    """Write PNGs: reconstructions, prior samples, latent scatter, manifold (z=2), interpolations, curves."""
    from pyro_vae import pipeline

    written, skipped = pipeline.plot_checkpoint(opts.pop("checkpoint"), opts.pop("out"), **opts)
    for path in written:
        click.echo(f"wrote {path}")
    for name, why in skipped.items():
        click.echo(f"no {name}.png: {why}")


def _output_file(path: str, suffixes: tuple[str, ...]) -> Path:
    """``path`` as an output file with one of ``suffixes``; its folder is created."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise click.BadParameter(f"{path!r} must end in {' or '.join(suffixes)}", param_hint="'--out'")
    if out.is_dir():
        raise click.BadParameter(f"{path!r} is a folder", param_hint="'--out'")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


@cli.command()
@trust_module_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="a ckpt.pt from train")
@click.option("-n", "--num-samples", type=POSITIVE, default=64, show_default=True)
@click.option("--out", required=True, help="samples.png (a grid) or samples.npy (an (n, 28, 28) float32 array)")
@click.option("--pixels", type=click.Choice(["mean", "sample"]), default="mean", show_default=True,
              help="decoder mean E[x|z], or one draw x ~ p(x|z)")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
def sample(**opts) -> None:
    """Draw z ~ p(z) and decode: a PNG grid or a NumPy array."""
    from pyro_vae import pipeline

    out = _output_file(opts["out"], (".png", ".npy"))
    pipeline.write_samples(opts["checkpoint"], opts["num_samples"], out, seed=opts["seed"], pixels=opts["pixels"],
                           device=opts["device"], trust_modules=opts["trust_modules"])  # fmt: skip
    click.echo(f"wrote {opts['num_samples']} samples to {out}")


@cli.command()
@trust_module_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True, help="a ckpt.pt from train")
@click.option("--out", required=True, help="latents.npz: means and scales (n, d), labels (n,)")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--limit", type=POSITIVE, default=None, help="only the first N images of the split")
@click.option("--batch-size", type=POSITIVE, default=500, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True, help="for guides whose moments are sampled (IAF)")
@click.option("--device", default="auto", show_default=True)
def encode(**opts) -> None:
    """Posterior means and scales of q(z|x) for a split, with the labels, as an .npz file."""
    import numpy as np

    from pyro_vae import pipeline
    from pyro_vae.runtime.atomic import atomic_path

    out = _output_file(opts.pop("out"), (".npz",))
    latents = pipeline.encode_checkpoint(opts.pop("checkpoint"), **opts)
    arrays = {k: v.numpy() if hasattr(v, "numpy") else np.array(v) for k, v in latents.items()}
    with atomic_path(out) as tmp:
        np.savez(tmp, **arrays)
    n, d = arrays["means"].shape
    click.echo(f"wrote means and scales ({n} x {d}) and labels of the {latents['split']} split to {out}")


def _fail(message: str, code: int) -> None:
    click.echo(f"pyro-vae: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def _is_out_of_memory(exc: RuntimeError) -> bool:
    """torch reports a failed allocation as ``torch.OutOfMemoryError`` (CUDA) or a RuntimeError (CPU)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


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
    except RunInterrupted as exc:
        _fail(str(exc), exc.exit_code)
    except PyroVAEError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
    except MemoryError:  # what the estimates of pyro_vae.runtime.limits did not foresee
        _fail("out of memory; lower the sizes (--hidden, --latent-dim, --batch-size, --particles, -n)", 1)
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        _fail(f"out of memory ({str(exc).splitlines()[0][:160]}); lower the sizes (--hidden, --latent-dim, "
              "--batch-size, --particles, -n)", 1)  # fmt: skip
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
