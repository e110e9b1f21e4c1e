"""``pyro-vae``: the command line, a thin shell over :mod:`pyro_vae.config` and :mod:`pyro_vae.pipeline`.

``train``'s run options are generated from :func:`pyro_vae.config.settings`, so each is described once, by the
part that owns it. Every error caused by input ends as one line on stderr and a non-zero exit: 2 when the
run or command is described wrongly (an option, a config value, a combination: :class:`ConfigError`), 1 when
the world does not fit the request (a file, the data, memory or disk, a diverging run), 3 when the Pyro and
analytic ELBOs disagree, 130 on Ctrl-C and 143 on SIGTERM (training saves a checkpoint first).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from pyro_vae.config import RunConfig, read_table, settings, with_overrides
from pyro_vae.data.sources import class_name
from pyro_vae.errors import AgreementError, ConfigError, PyroVAEError, RunInterrupted, first_line
from pyro_vae.model.rebuild import trusted_module_names
from pyro_vae.options import Setting, coerce
from pyro_vae.runtime import distributed
from pyro_vae.runtime.policy import RuntimePolicy, runtime_policy
from pyro_vae.training.run_folder import RunFolder
from pyro_vae.training.runs import start_run

POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, 2**32 - 1)  # what numpy, and so pyro.set_rng_seed, accepts


def _module_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return trusted_module_names(value)
    except PyroVAEError as exc:
        raise click.BadParameter(str(exc)) from None


# The one way a checkpoint or a config file gets to import code outside pyro_vae (pyro_vae/model/rebuild.py).
trust_module_option = click.option(
    "--trust-module",
    "trust_modules",
    multiple=True,
    metavar="MODULE",
    callback=_module_names,
    help="let the checkpoint (or --config file) build components from MODULE (your own code; repeat per module). "
    "Without it only pyro_vae's classes are built and no other module is imported",
)


checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    metavar="CKPT",
    help="a checkpoint (OUT/ckpt.pt, OUT/best.pt), a folder from `pyro-vae export`, or hf://OWNER/NAME",
)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="the run's kind of data in another place (torchvision root, image folder or array file)",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyro-vae", message="%(prog)s %(version)s")
def cli() -> None:
    """Variational autoencoders as Pyro model/guide pairs, trained with SVI."""


def _param_name(setting: Setting) -> str:
    return "setting__" + setting.key.replace(".", "__")


def _click_option(setting: Setting) -> click.Option:
    """The command-line option of a run setting. Values stay text (booleans are flags) and are checked by
    the library, so the command line and a config file give the same message for the same mistake."""
    if setting.type is bool:
        flags = f"{setting.flag}/--no-{setting.flag[2:]}"
        return click.Option([flags, _param_name(setting)], default=None, help=setting.help_text())
    return click.Option(
        [setting.flag, _param_name(setting)], default=None, metavar=setting.metavar(), help=setting.help_text()
    )


class RunCommand(click.Command):
    """A command whose run options are generated when it runs, from :func:`pyro_vae.config.settings`: every
    config field and every registered component's options, so a component class defined before the call
    brings its own options."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return [*(_click_option(s) for s in settings()), *super().get_params(ctx)]


def _overrides(opts: dict) -> dict:
    """``{key: value}`` for the run settings given on the command line, each checked as a config value is."""
    found = {}
    for setting in settings():
        value = opts.pop(_param_name(setting), None)
        if value is not None:
            found[setting.key] = coerce(setting, value, text=setting.type is not bool)
    return found


@cli.command(cls=RunCommand)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"a run config (TOML: OUT/{RunFolder.CONFIG}, configs/*.toml); options given here override it",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option(
    "--threads",
    default="auto",
    show_default=True,
    metavar="auto|N",
    help="CPU threads: auto sizes them before each epoch to the cores other processes leave free (at most "
    "torch's default; $OMP_NUM_THREADS, when set, fixes them); N fixes them",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/latest",
    show_default=True,
    help=f"run folder for {RunFolder.CHECKPOINT}, {RunFolder.METRICS} and {RunFolder.CONFIG}",
)
@click.option(
    "--resume", default=None, metavar="CKPT", help="continue the run in this checkpoint (to --epochs in total)"
)
@click.option("--overwrite", is_flag=True, help="replace a run already in --out")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
@click.option(
    "--tensorboard",
    is_flag=True,
    help='write TensorBoard scalars and pictures to OUT/tensorboard (pip install "pyro-vae[tensorboard]")',
)
@click.option("--mlflow", is_flag=True, help='log the run to MLflow (pip install "pyro-vae[mlflow]")')
@trust_module_option
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train a VAE with SVI; writes OUT/ckpt.pt, OUT/metrics.jsonl and OUT/config.toml.

    Each run option has a key in the config file (shown in its help); options given here override --config."""
    from pyro_vae import pipeline
    from pyro_vae.training.callbacks import MLflowLogger, TensorBoard

    log = _log_on_rank_0(distributed.join(opts["device"]))
    threads = _threads(opts.pop("threads"))
    overrides = _overrides(opts)
    callbacks = [*([TensorBoard()] if opts["tensorboard"] else []), *([MLflowLogger()] if opts["mlflow"] else [])]
    if opts["resume"]:
        fixed = [s.flag for s in settings() if s.key in overrides and not s.option.resumable]
        if fixed or opts["config_file"]:
            names = ", ".join(fixed or ["--config"])
            raise click.UsageError(f"{names} cannot change on --resume (the checkpoint fixes them)")
        explicit_out = ctx.get_parameter_source("out") == ParameterSource.COMMANDLINE
        trainer = pipeline.resume_run(
            opts["resume"],
            out_dir=opts["out"] if explicit_out else None,
            data_dir=overrides.get("data.root"),
            device=opts["device"],
            progress=opts["progress"],
            log=log,
            trust_modules=opts["trust_modules"],
            changes={key: value for key, value in overrides.items() if key != "data.root"},
            callbacks=callbacks,
        )
        log(f"resuming {opts['resume']} at epoch {trainer.epoch}")
    else:
        if opts["trust_modules"] and not opts["config_file"]:
            raise click.UsageError("--trust-module applies to --resume and --config (files that name components)")
        table = read_table(opts["config_file"]) if opts["config_file"] else {}
        config = RunConfig.from_dict(with_overrides(table, overrides), opts["config_file"] or "", opts["trust_modules"])
        trainer = start_run(
            config,
            opts["out"],
            device=opts["device"],
            overwrite=opts["overwrite"],
            progress=opts["progress"],
            log=log,
            trust_modules=opts["trust_modules"],
            callbacks=callbacks,
        )
    for note in trainer.data.notes:  # what reading the data had to decide (an array's layout, streaming)
        log(note)
    stream = " (streamed from disk)" if trainer.data.stream else ""
    log(
        f"training on {trainer.data.device}: {trainer.data.config.describe()}, "
        f"{trainer.data.count('train')} training images{stream}"
    )
    fixed = threads is not None or "OMP_NUM_THREADS" in os.environ  # else the budget sizes the threads each epoch
    with runtime_policy(RuntimePolicy.command_line(thread_budget=not fixed)):
        trainer.fit()
    best = trainer.files.best
    extra = [
        f"the best epoch's in {best}" if best.exists() else "",
        f"pictures in {trainer.files.plots}" if trainer.config.schedule.plot_every else "",
        f"TensorBoard logs in {trainer.files.tensorboard}" if opts["tensorboard"] else "",
    ]
    log(
        f"wrote {trainer.checkpoint_path}, {trainer.files.metrics} and {trainer.files.config}"
        + "".join(f"; {e}" for e in extra if e)
    )


def _log_on_rank_0(group: distributed.Group):
    """Progress lines on stderr, from rank 0 only in a job of several processes."""
    return (lambda message: click.echo(message, err=True)) if group.is_main else (lambda message: None)


def _threads(value: str) -> int | None:
    """``--threads``: ``None`` for auto, else the fixed count (set here)."""
    if value == "auto":
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if not 1 <= threads <= 4096:
        raise ConfigError(f"--threads must be auto or a count from 1 to 4096, got {value!r}")
    import torch

    torch.set_num_threads(threads)
    return threads


def _mean_and_stderr(s: dict, key: str) -> str:
    """``s[key] ± s[key_stderr]``, as every table here prints a mean over images."""
    return f"{s[key]:10.3f} ± {s[key + '_stderr']:.3f}"


def _format_table(info: dict, s: dict) -> str:
    pm = functools.partial(_mean_and_stderr, s)
    k = f"K={s['iwae_k']}  " if "iwae" in s else ""
    recon_term, kl_term = info.get("terms", ("E_q[log p(x|z)]", "KL(q(z|x) || p(z))"))
    pyro_elbo = f"ELBO, Pyro {info.get('pyro_elbo', 'Trace_ELBO')} ({s['num_particles']} particle(s))"
    lines = [
        f"{info['data']}",
        f"split={info['split']}  n={s['n']}  {k}checkpoint epoch {info['epoch']}  seed={s['seed']}  "
        f"device={info['device']}",
        f"prior {info['prior']}, likelihood {info['likelihood']}, guide {info['guide']}",
        f"nats per image, as bounds on {info.get('bound_of', 'log p(x)')} (higher is better); ± is the standard error "
        "over images",
        f"  {pyro_elbo}  {pm('elbo')}",
        f"  ELBO, hand-written analytic KL        {pm('elbo_analytic')}",
        f"  agreement z (paired, |z| < 4 passes)  {s['agreement_z']:10.2f}",
        f"  {'reconstruction ' + recon_term:<37} {s['recon']:10.3f}",
        f"  {kl_term + ' [' + s['kl_method'] + ']':<37} {s['kl']:10.3f}",
    ]
    for layer, kl in enumerate(s.get("kl_per_layer", ()), start=1):
        units = s.get("active_units_per_layer")
        active = f"   active units {units[layer - 1]} of {s['latent_dims'][layer - 1]}" if units else ""
        lines.append(f"    {'layer z' + str(layer) + ': E_q[log q - log p]':<35} {kl:10.3f}{active}")
    if "iwae" in s:
        lines.append(f"  IWAE bound, K={s['iwae_k']:<22} {pm('iwae')}")
    if "ais" in s:
        lines.append(
            f"  AIS, {s['ais_steps']} steps x {s['ais_chains']} chains{'':<9} {pm('ais')}   "
            f"(HMC acceptance {s['ais_acceptance']:.2f})"
        )
        if "ais_minus_iwae" in s:
            gain, se = s["ais_minus_iwae"], s["ais_minus_iwae_stderr"]
            verdict = "AIS >= IWAE, as it should" if gain > -2 * se else "AIS below IWAE: give it more steps"
            verdict = verdict if se == se else ""  # (one image: no standard error, no verdict)
            lines.append(f"  AIS - IWAE (paired)                  {gain:+10.3f} ± {se:.3f}   {verdict}")
    if "elbo_bits_per_dim" in s:
        iwae_bpd = f", IWAE {s['iwae_bits_per_dim']:.4f}" if "iwae_bits_per_dim" in s else ""
        lines.append(f"  bits/dim (discrete likelihood)       ELBO {s['elbo_bits_per_dim']:.4f}{iwae_bpd}")
    if "accuracy" in s:
        lines.append(
            f"  classifier q(y|x) accuracy            {100 * s['accuracy']:9.2f}% ± {100 * s['accuracy_stderr']:.2f}"
        )
    if "active_units" in s:
        lines.append(
            f"  active units (Var_x E_q[z_u] > {s['active_unit_threshold']:g})  "
            f"{s['active_units']:5d} of {s['latent_dim']}"
        )
    if "mutual_information" in s:
        n_mi = s["mutual_information_images"]
        lines.append(
            f"  {'I(x;z), over the evaluated images':<37} {s['mutual_information']:10.3f} ± "
            f"{s['mutual_information_stderr']:.3f}   (at most log N = {math.log(n_mi):.2f}, N = {n_mi})"
        )
        lines.append(f"  {'marginal KL(q(z) || p(z)) = KL - I':<37} {s['marginal_kl']:10.3f}")
    if "kl_per_dim" in s:
        kls = s["kl_per_dim"]
        lines.append(f"  KL per latent unit, units 0..{len(kls) - 1} (they sum to {sum(kls):.3f})")
        lines += ["    " + " ".join(f"{kl:6.2f}" for kl in kls[i : i + 10]) for i in range(0, len(kls), 10)]
    if s["kl_method"] == "monte-carlo":
        lines.append("  note: this prior/guide pair has no closed-form KL, so the hand-written ELBO uses a Monte Carlo")
        lines.append("        KL on the same draws: the check covers the likelihood, the guide density and sampling")
    if s["kl_method"] == "partly monte-carlo":
        lines.append("  note: some layers' terms have no closed form (bottom-up below the top layer, or a top prior")
        lines.append("        without one): the hand-written ELBO uses Monte Carlo terms there, on the same draws")
    chunk = f"; IWAE in chunks of {info['iwae_chunk']} particles" if info["iwae_chunk"] else ""
    lines.append(
        f"took {info['seconds']:.1f} s; peak memory {info['peak_memory_mib']:.0f} MiB ({info['peak_memory_of']}){chunk}"
    )
    return "\n".join(lines)


def _format_by_class(info: dict, s: dict, rows: dict) -> str:
    iwae = f"IWAE K={s['iwae_k']}" if "iwae" in s else ""
    lines = [
        f"per class ({info['split']} split):",
        f"  {'class':<12} {'n':>6} {'ELBO':>18} {iwae:>18} {'recon':>9} {'KL':>8}"
        + ("  accuracy" if any("accuracy" in row for row in rows.values()) else ""),
    ]
    pm = lambda row, key: f"{row[key]:9.2f} ± {row[key + '_stderr']:5.2f}" if key in row else ""  # noqa: E731
    for label, row in rows.items():
        lines.append(
            f"  {class_name(info['class_names'], label):<12} {row['n']:>6} {pm(row, 'elbo'):>18} {pm(row, 'iwae'):>18} "
            f"{row['recon']:9.2f} {row['kl']:8.2f}" + (f"  {100 * row['accuracy']:7.2f}%" if "accuracy" in row else "")
        )
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
@checkpoint_option
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option(
    "--num-particles", type=POSITIVE, default=1, show_default=True, help="samples per image for the ELBO estimates"
)
@click.option(
    "--iw-samples",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="K of the importance-weighted bound (0 skips it; the IWAE paper uses 5000)",
)
@data_dir_option
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--limit", type=POSITIVE, default=None, help="only the first N images of the split")
@click.option("--batch-size", type=POSITIVE, default=500, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--by-class", is_flag=True, help="also break the bounds down by class label")
@click.option(
    "--ais",
    "ais_steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="also estimate log p(x) by annealed importance sampling with N HMC steps (0: not; Wu et al. use 1000+)",
)
@click.option("--ais-chains", type=POSITIVE, default=4, show_default=True, help="AIS chains per image")
@click.option(
    "--bdmc",
    is_flag=True,
    help="bidirectional Monte Carlo instead of a split: simulate --limit images (default 100) from the model and "
    "sandwich log p(x) between forward AIS and reverse AIS from the exact posterior sample (needs --ais STEPS): "
    "the measured error of AIS with that many steps",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
def elbo(**opts) -> None:
    """Evaluate a checkpoint: Pyro ELBO, analytic-KL ELBO, their agreement, IWAE bound, active units."""
    from pyro_vae import pipeline

    as_json, by_class = opts.pop("as_json"), opts.pop("by_class")
    if opts.pop("bdmc"):
        return _bdmc(opts, as_json, by_class)
    group = distributed.join(opts["device"])
    result, info = pipeline.evaluate_checkpoint(opts.pop("checkpoint"), **opts, log=_log_on_rank_0(group))
    if by_class and not info["labelled"]:
        raise ConfigError(f"--by-class needs labelled images; the {info['split']} split of {info['data']} has none")
    summary = result.summary()
    rows = result.by_class() if by_class else None
    if group.is_main:  # every process has the numbers; rank 0 prints them
        click.echo(_format_evaluation(info, summary, rows, as_json))
    result.check_agreement()


def _bdmc(opts: dict, as_json: bool, by_class: bool) -> None:
    """``elbo --bdmc``: the usual bounds and the BDMC sandwich on images simulated from the model."""
    from pyro_vae import pipeline
    from pyro_vae.inference.bdmc import sandwich_summary

    if not opts["ais_steps"]:
        raise click.UsageError("--bdmc needs --ais STEPS (the annealing steps of both directions)")
    split_given = click.get_current_context().get_parameter_source("split") == ParameterSource.COMMANDLINE
    if by_class or opts["data_dir"] or opts["num_particles"] != 1 or split_given:
        raise click.UsageError(
            "--bdmc simulates its images: --split, --data-dir, --by-class and --num-particles do not apply"
        )
    result, sandwich, info = pipeline.bdmc_checkpoint(
        opts["checkpoint"],
        n=opts["limit"] or 100,
        ais_steps=opts["ais_steps"],
        ais_chains=opts["ais_chains"],
        iw_samples=opts["iw_samples"],
        seed=opts["seed"],
        batch_size=opts["batch_size"],
        device=opts["device"],
        progress=opts["progress"],
        trust_modules=opts["trust_modules"],
    )
    summary = {**result.summary(), **{"bdmc_" + k: v for k, v in sandwich_summary(sandwich).items()}}
    if as_json:
        click.echo(json.dumps(_json_safe({**info, **summary}), allow_nan=False))
    else:
        click.echo(_format_table(info, summary) + "\n" + _format_bdmc({**info, **summary}))
    result.check_agreement()


def _format_bdmc(s: dict) -> str:
    pm = functools.partial(_mean_and_stderr, s)
    return "\n".join(
        [
            f"bidirectional Monte Carlo, {s['ais_steps']} steps x {s['ais_chains']} chains each way "
            "(log p(x) lies between, in expectation):",
            f"  forward AIS from q(z|x) (lower)       {pm('bdmc_lower')}   (HMC acceptance "
            f"{s['bdmc_forward_acceptance']:.2f})",
            f"  reverse AIS from the exact z (upper)  {pm('bdmc_upper')}   (HMC acceptance "
            f"{s['bdmc_reverse_acceptance']:.2f})",
            f"  sandwich width, upper - lower         {pm('bdmc_width')}   (widest image {s['bdmc_width_max']:.3f})",
        ]
    )


def _format_evaluation(info: dict, summary: dict, rows: dict | None, as_json: bool) -> str:
    if as_json:
        fields = {**info, **summary}
        if rows is not None:
            fields["by_class"] = {
                label: {"name": class_name(info["class_names"], label), **row} for label, row in rows.items()
            }
        return json.dumps(_json_safe(fields), allow_nan=False)
    return _format_table(info, summary) + ("" if rows is None else "\n" + _format_by_class(info, summary, rows))


@cli.command()
@trust_module_option
@checkpoint_option
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option(
    "--limit",
    type=POSITIVE,
    default=1000,
    show_default=True,
    help="the first N images of the split (each gets its own SVI fit and AIS)",
)
@data_dir_option
@click.option("--ais", "ais_steps", type=POSITIVE, default=1000, show_default=True, help="AIS steps for log p(x)")
@click.option("--ais-chains", type=POSITIVE, default=4, show_default=True, help="AIS chains per image")
@click.option(
    "--full-cov",
    is_flag=True,
    help="also fit a full-covariance q* per image (a diagonal guide's richer family, as Cremer et al. fit a flow)",
)
@click.option(
    "--particles", type=POSITIVE, default=10, show_default=True, help="draws per image in each SVI step of q*"
)
@click.option(
    "--eval-particles", type=POSITIVE, default=100, show_default=True, help="draws per image for L[q] and L[q*]"
)
@click.option(
    "--max-steps", type=POSITIVE, default=3000, show_default=True, help="SVI steps at most (it stops on convergence)"
)
@click.option("--batch-size", type=POSITIVE, default=500, show_default=True, help="images fitted at once")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
@click.option("--progress/--no-progress", default=None, help="show a progress bar [default: on a terminal]")
def gaps(**opts) -> None:
    """Split log p(x) - ELBO into the approximation gap (the guide family's limit) and the amortization gap (the
    encoder's): AIS, an SVI-fitted q* per image, the amortised q (Cremer et al. 2018)."""
    from pyro_vae import pipeline

    as_json = opts.pop("as_json")
    result, info = pipeline.gaps_checkpoint(opts.pop("checkpoint"), **opts)
    s = result.summary()
    if as_json:
        click.echo(json.dumps(_json_safe({**info, **s}), allow_nan=False))
        return
    pm = functools.partial(_mean_and_stderr, s)
    lines = [
        info["data"],
        f"split={info['split']}  n={s['n']}  checkpoint epoch {info['epoch']}  seed={opts['seed']}  "
        f"device={info['device']}  guide {info['guide']}",
        "nats per image; ± is the standard error over images",
        f"  log p(x), AIS {s['ais_steps']} steps x {s['ais_chains']} chains{'':<3} {pm('log_likelihood')}",
        f"  L[q*], {info['family']} q* fitted per image{'':<4} {pm('elbo_local')}",
        f"  L[q], the amortised guide (encoder)   {pm('elbo_amortized')}",
        f"  approximation gap, log p(x) - L[q*]   {pm('approximation_gap')}",
        f"  amortization gap, L[q*] - L[q]        {pm('amortization_gap')}",
        f"  inference gap, log p(x) - L[q]        {pm('inference_gap')}",
    ]
    if "elbo_full_cov" in s:
        lines += [
            f"  L[q*], full-covariance q*             {pm('elbo_full_cov')}",
            f"  approximation gap of full-cov q*      {pm('approximation_gap_full_cov')}",
        ]
    steps = ", ".join(map(str, s["svi_steps"])) + (
        f"; full-covariance q*: {', '.join(map(str, s['svi_steps_full_cov']))}" if "svi_steps_full_cov" in s else ""
    )
    converged = "converged" if s["converged"] else f"NOT converged within --max-steps {info['max_steps']}"
    lines.append(f"SVI steps per group of images: {steps} ({converged}); took {info['seconds']:.1f} s")
    click.echo("\n".join(lines))


@cli.command()
@trust_module_option
@checkpoint_option
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the PNGs")
@data_dir_option
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option(
    "--num-points",
    type=click.IntRange(min=16),
    default=5000,
    show_default=True,
    help="images in the latent scatter (the first N of the split)",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--manifold-size",
    type=click.IntRange(2, 100),
    default=20,
    show_default=True,
    help="z=2: decodings per side of the manifold grid (the Keras example's walk is 10)",
)
@click.option(
    "--manifold-mass",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.9,
    show_default=True,
    help="z=2: central prior mass the grid spans per axis (0.99 reaches z = ±2.58)",
)
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
@checkpoint_option
@click.option("-n", "--num-samples", type=POSITIVE, default=64, show_default=True)
@click.option(
    "--out",
    required=True,
    help="samples.png (a grid) or samples.npy (an (n, H, W) float32 array of the data's image size)",
)
@click.option(
    "--pixels",
    type=click.Choice(["mean", "sample"]),
    default="mean",
    show_default=True,
    help="decoder mean E[x|z], or one draw x ~ p(x|z)",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--label",
    default=None,
    help="a model with labels (--structure conditional or semi-supervised): draw this class, by number or name "
    "[default: each class in turn]",
)
def sample(**opts) -> None:
    """Draw z ~ p(z) and decode: a PNG grid or a NumPy array."""
    from pyro_vae import pipeline

    out = _output_file(opts["out"], (".png", ".npy"))
    pipeline.write_samples(
        opts["checkpoint"],
        opts["num_samples"],
        out,
        seed=opts["seed"],
        pixels=opts["pixels"],
        device=opts["device"],
        trust_modules=opts["trust_modules"],
        label=opts["label"],
    )
    which = "" if opts["label"] is None else f" of class {opts['label']}"
    click.echo(f"wrote {opts['num_samples']} samples{which} to {out}")


@cli.command()
@trust_module_option
@checkpoint_option
@click.option("--out", required=True, help="latents.npz: means and scales (n, d), labels (n,)")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@data_dir_option
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
    labels = " and labels" if "labels" in arrays else ""
    click.echo(f"wrote means and scales ({n} x {d}){labels} of the {latents['split']} split to {out}")


@cli.command()
@trust_module_option
@checkpoint_option
@data_dir_option
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(1, 50_000),
    default=5000,
    show_default=True,
    help="the first N images of the split in the scatter (at most 50,000)",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; any other than this machine's loopback lets the network see the model and the data",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="port to listen on (0: a free one)"
)
@click.option("--device", default="auto", show_default=True)
def explore(**opts) -> None:
    """Serve an interactive page of the latent space: the split's posterior means, decodings from a point, along
    each coordinate and between two points, prior samples. Runs until Ctrl-C (then exits 0)."""
    from pyro_vae.explorer import Endpoints, load_latent_space, make_server
    from pyro_vae.explorer.server import is_loopback

    host, port = opts.pop("host"), opts.pop("port")
    space = load_latent_space(opts.pop("checkpoint"), **opts)
    server = make_server(Endpoints(space), host, port, log=lambda line: click.echo(line, err=True))
    try:  # (from here on, Ctrl-C is the way to stop, even before serve_forever is reached)
        if not is_loopback(host):
            click.echo(f"warning: listening on {host}: whoever reaches it can use the model and see the data", err=True)
        click.echo(space.description, err=True)
        click.echo(f"explore the latent space at {server.url} (Ctrl-C stops)")
        sys.stdout.flush()
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped (Ctrl-C)", err=True)
    finally:
        server.server_close()


@cli.command()
@click.argument("checkpoint", metavar="CKPT")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
@trust_module_option
def info(checkpoint: str, as_json: bool, trust_modules: tuple[str, ...]) -> None:
    """What a checkpoint, best.pt, an exported folder or hf://OWNER/NAME holds (nothing is built or run)."""
    import tomli_w

    from pyro_vae import pipeline

    found = pipeline.checkpoint_info(checkpoint, trust_modules=trust_modules)
    if as_json:
        click.echo(json.dumps(_json_safe(found), allow_nan=False))
        return
    best = (
        "n/a"
        if found["best_val_elbo"] is None
        else f"{found['best_val_elbo']:.2f} at epoch {found['best_val_epoch']} (last {found['last_val_elbo']:.2f})"
    )
    versions = ", ".join(f"{k} {v}" for k, v in found["versions"].items())
    click.echo(
        "\n".join(
            [
                f"{found['path']}: {found['kind']}, format {found['format_version']}, "
                f"{found['size_bytes'] / 2**20:.2f} MiB"
                + ("" if found["resumable"] else " (weights only: not resumable)"),
                f"epoch            {found['epoch']} of {found['epochs']}",
                f"best val ELBO    {best}",
                f"data             {found['data']}, images {'x'.join(map(str, found['data_shape']))}",
                f"structure        {found['structure']}, latent layers "
                f"{' + '.join(map(str, found['latent_dims']))} (z1 first)",
                f"prior            {found['prior']}",
                f"likelihood       {found['likelihood']}",
                f"guide            {found['guide']}",
                f"parameters       {found['parameters']:,}",
                f"versions         {versions}",
                "config (pyro-vae train --config reads this as TOML):",
                *(f"  {line}".rstrip() for line in tomli_w.dumps(found["config"]).strip().splitlines()),
            ]
        )
    )


@cli.command()
@click.argument("checkpoint", metavar="CKPT")
@click.argument("out_dir", metavar="DIR")
@click.option(
    "--push-to",
    metavar="OWNER/NAME",
    default=None,
    help='also upload the folder to this Hugging Face Hub repository (pip install "pyro-vae[hub]")',
)
@trust_module_option
def export(checkpoint: str, out_dir: str, push_to: str | None, trust_modules: tuple[str, ...]) -> None:
    """Write DIR/config.json, DIR/model.safetensors and a DIR/README.md model card: the model, weights only."""
    from pyro_vae import sharing

    folder = sharing.export_checkpoint(checkpoint, out_dir, trust_modules=trust_modules)
    click.echo(f"wrote {folder / sharing.CONFIG_JSON}, {folder / sharing.WEIGHTS} and {folder / sharing.CARD}")
    if push_to:
        click.echo(f"uploaded to {sharing.push(folder, push_to)}")


def _fail(message: str, code: int) -> None:
    group = distributed.current()
    rank = f"rank {group.rank}: " if group.parallel else ""  # (every process of a job reports its own error)
    click.echo(f"pyro-vae: error: {rank}{' '.join(str(message).split())}", err=True)
    sys.exit(code)


def _is_out_of_memory(exc: RuntimeError) -> bool:
    """torch reports a failed allocation as ``torch.OutOfMemoryError`` (CUDA) or a RuntimeError (CPU)."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or "out of memory" in text


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the click group and turn input errors into one line and an exit code."""
    try:
        with runtime_policy(RuntimePolicy.command_line()):  # this process is ours: the faster settings
            code = cli.main(args=argv, prog_name="pyro-vae", standalone_mode=False)
    except click.UsageError as exc:
        _fail(exc.format_message(), 2)
    except ConfigError as exc:  # a run option, config value or combination that cannot be
        _fail(str(exc), 2)
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
        _fail(
            f"out of memory ({first_line(exc)}); lower the sizes (--hidden, --latent-dim, "
            "--batch-size, --particles, -n)",
            1,
        )
    distributed.leave()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
