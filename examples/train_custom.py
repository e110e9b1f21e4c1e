"""Train and evaluate a VAE with a custom prior and likelihood (see README, "Your own prior or likelihood").

    PYTHONPATH=examples python examples/train_custom.py --data-dir ../shared/data
    PYTHONPATH=examples pyro-vae elbo --checkpoint runs/custom/ckpt.pt --data-dir ../shared/data \
        --trust-module my_components
"""

import argparse
import json

from my_components import LaplaceLikelihood, LaplacePrior

from pyro_vae import VAE, DataConfig, NetConfig, TrainConfig, Trainer, VAEData, evaluate

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--train-limit", type=int, default=None)
parser.add_argument("--out", default="runs/custom")
args = parser.parse_args()

data = VAEData(DataConfig("mnist", binarize="none", train_limit=args.train_limit), args.data_dir)
vae = VAE(NetConfig(latent_dim=16, hidden=(400,)), LaplacePrior(16), LaplaceLikelihood())
Trainer(vae, data, TrainConfig(epochs=args.epochs), args.out, log=print).fit()
result = evaluate(vae, data.images["test"][:1000], iw_samples=10)
result.check_agreement()  # raises if the Pyro ELBO and the analytic-KL ELBO disagree
print(json.dumps(result.summary()))
