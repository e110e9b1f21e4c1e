"""Train and evaluate a VAE with a custom prior and likelihood (see docs/components.md, "Your own prior or likelihood").

PYTHONPATH=examples python examples/train_custom.py --data-dir ../shared/data
PYTHONPATH=examples pyro-vae elbo --checkpoint runs/custom/ckpt.pt --trust-module my_components
"""

import argparse
import json

import my_components  # noqa: F401  (defining its classes registers the "laplace" prior and likelihood)

from pyro_vae import ComponentConfig, DataConfig, ModelConfig, RunConfig, evaluate_checkpoint, start_run

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--train-limit", type=int, default=None)
parser.add_argument("--out", default="runs/custom")
args = parser.parse_args()

model = ModelConfig(latent_dim=16, prior=ComponentConfig("laplace"), likelihood=ComponentConfig("laplace-one-scale"))
config = RunConfig(
    seed=0, data=DataConfig("mnist", "none", train_limit=args.train_limit, root=args.data_dir), model=model
)
config.schedule.epochs = args.epochs
trainer = start_run(config, args.out, log=print, overwrite=True)  # seeded: the same numbers on every run
trainer.fit()
result, _ = evaluate_checkpoint(trainer.checkpoint_path, limit=1000, iw_samples=10, trust_modules=["my_components"])
result.check_agreement()  # raises if the Pyro ELBO and the analytic-KL ELBO disagree
print(json.dumps(result.summary()))
