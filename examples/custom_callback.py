"""A callback of your own: it sees every epoch's record (and every step, and the end of the run).

    python examples/custom_callback.py --data-dir ../shared/data

Here it keeps the KL term of a few validation images per epoch and stops nothing; a callback only watches,
so the run's numbers are the same with or without it.
"""

import argparse
import json

from pyro_vae import Callback, DataConfig, RunConfig, evaluate, start_run

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--train-limit", type=int, default=5000)
parser.add_argument("--out", default="runs/callback")
args = parser.parse_args()


class KLWatcher(Callback):
    def __init__(self):
        self.kl_per_epoch = []

    def on_epoch_end(self, trainer, record):
        x = trainer.data.images["val"][:500]
        self.kl_per_epoch.append(float(evaluate(trainer.vae, x, iw_samples=0).kl.mean()))
        trainer.log(f"  epoch {record['epoch']}: KL {self.kl_per_epoch[-1]:.2f} nats")


watcher = KLWatcher()
config = RunConfig(data=DataConfig("mnist", "dynamic", train_limit=args.train_limit, root=args.data_dir))
config.schedule.epochs = args.epochs
start_run(config, args.out, log=print, overwrite=True, callbacks=[watcher]).fit()
print(json.dumps({"kl_per_epoch": watcher.kl_per_epoch}))
