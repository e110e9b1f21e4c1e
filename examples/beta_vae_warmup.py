"""A beta-VAE with KL warm-up: the KL weight ramps linearly from 0 to --beta over --warmup-epochs.

    python examples/beta_vae_warmup.py --data-dir ../shared/data --beta 4 --warmup-epochs 3 --epochs 6

Same as ``pyro-vae train --beta 4 --warmup-epochs 3 --epochs 6 --latent-dim 10``. The weight multiplies
log p(z) in the model and log q(z|x) in the guide (``poutine.scale`` on the latent site), so the
objective is E_q[log p(x|z)] - beta * KL; each epoch's final weight is logged in metrics.jsonl.
"""

import argparse
import json

from pyro_vae import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, VAEData, evaluate, start_run

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--beta", type=float, default=4.0)
parser.add_argument("--warmup-epochs", type=int, default=3)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--train-limit", type=int, default=None)
parser.add_argument("--out", default="runs/beta-vae")
args = parser.parse_args()

data = DataConfig("mnist", "dynamic", train_limit=args.train_limit, root=args.data_dir)
config = RunConfig(
    seed=0,
    data=data,
    model=ModelConfig(latent_dim=10),
    objective=ObjectiveConfig(beta=args.beta, warmup_epochs=args.warmup_epochs),
)
config.schedule.epochs = args.epochs
trainer = start_run(config, args.out, log=print, overwrite=True)
trainer.fit()
test_images = VAEData(data, splits=("test",)).images["test"][:1000]
result = evaluate(trainer.vae, test_images, iw_samples=0)  # the plain (beta = 1) ELBO
result.check_agreement()
print(json.dumps({"beta_per_epoch": [m["beta"] for m in trainer.metrics], **result.summary()}))
