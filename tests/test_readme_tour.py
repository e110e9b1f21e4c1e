"""The README's five-minute tour, run as written (on a small slice of the data, so that it takes seconds): each
command of its ``<!-- tour -->`` block exits 0 and writes what the README says it writes."""

import re
import shlex
from pathlib import Path

import pytest
from pyro_vae.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = {  # added to each command so the tour runs in seconds; the README's own flags are kept
    "train": ["--epochs", "1", "--train-limit", "1000", "--val-size", "200", "--no-progress"],
    "elbo": ["--limit", "200", "--iw-samples", "5"],
}


def tour_commands(readme: str) -> list[list[str]]:
    block = re.search(r"<!-- tour -->\n```bash\n(.*?)```", readme, re.S)
    assert block, "README has no <!-- tour --> block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def run_tour(commands: list[list[str]], data_dir: Path) -> list[int]:
    codes = []
    for command in commands:
        assert command[0] == "pyro-vae", command
        args = [str(data_dir) if a == "../shared/data" else a for a in command[1:]]
        with pytest.raises(SystemExit) as done:
            main(args + SMALL.get(args[0], []))
        codes.append(done.value.code)
        if done.value.code not in (0, None):
            break
    return codes


@pytest.fixture
def tour_folder(tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_tour_runs_as_written(tour_folder, data_dir):
    commands = tour_commands((ROOT / "README.md").read_text())
    assert [c[1] for c in commands][:4] == ["train", "elbo", "plot", "sample"]
    assert set(run_tour(commands, data_dir)) <= {0, None}
    run = tour_folder / "runs" / "tour"
    assert {"config.toml", "ckpt.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert (run / "samples.png").stat().st_size and list((run / "plots").glob("*.png"))


def test_a_tour_with_a_wrong_flag_fails(tour_folder, data_dir):
    # the control: a command the CLI does not know stops the tour with a non-zero exit
    commands = tour_commands("<!-- tour -->\n```bash\npyro-vae train --no-such-flag --out runs/x\n```\n")
    assert run_tour(commands, data_dir) == [2]
