"""The package's imports only go down: no module imports the package root, and no import circle, counting every
import statement (at module level, inside functions, under ``TYPE_CHECKING``), read from the source with ``ast``."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pyro_vae": ROOT / "pyro_vae", "pyro_vae.cli": ROOT / "cli"}
# The one allowed upward edge, until the deprecated alias goes (0.4): RunConfig.build calls start_run.
DEPRECATED_EDGES = {("pyro_vae.config", "pyro_vae.training.runs")}


def modules(packages: dict[str, Path]) -> dict[str, Path]:
    found = {}
    for name, folder in packages.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from .x import y`` counts ``.x.y`` when that is a module)."""
    known = modules(packages)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in known and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_graph() -> dict[str, set[str]]:
    graph = import_graph(PACKAGES)
    for source, target in DEPRECATED_EDGES:
        graph[source].discard(target)
    return graph


def test_no_module_imports_the_package_root():
    graph = package_graph()
    assert [m for m, targets in graph.items() if "pyro_vae" in targets and m != "pyro_vae.__main__"] == []


def test_there_is_no_import_circle():
    assert cycles(package_graph()) == []


def test_the_checker_sees_a_circle_and_a_root_import(tmp_path):
    # negative control: a package whose modules import each other (one lazily, one under TYPE_CHECKING)
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .sub.a import A\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from .b import B\nA = 1\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\nB = 2\n"
    )
    (package / "sub" / "c.py").write_text("def f():\n    from .. import sub\n    from . import a\n")
    graph = import_graph({"pkg": package})
    assert cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]]
    assert "pkg.sub" in graph["pkg.sub.c"]


def test_the_deprecated_edge_is_still_needed():
    # once RunConfig.build is gone, the allowance must go too
    graph = import_graph(PACKAGES)
    assert all(target in graph[source] for source, target in DEPRECATED_EDGES)


def test_a_model_module_imports_without_the_trainer():
    code = "import sys, pyro_vae.model.priors; print(any(m.startswith('pyro_vae.training') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_runconfig_build_still_works_and_says_what_replaces_it(tmp_path, data_dir):
    from pyro_vae import DataConfig, RunConfig, Trainer

    config = RunConfig(data=DataConfig(train_limit=256, val_size=64, root=str(data_dir)))
    with pytest.warns(FutureWarning, match=r"pyro_vae\.start_run\(config, out_dir"):
        trainer = config.build(tmp_path, device="cpu", progress=False)
    assert isinstance(trainer, Trainer)
    trainer.lock.release()


def flags_named_in(text: str) -> list[str]:
    return re.findall(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*", text)


def test_every_flag_a_message_names_exists():
    """Each ``--flag`` written in a string of the library or the CLI (messages, help) is an option click knows,
    besides other tools' flags (torchrun's, TensorBoard's) and the ``--no-`` prefix the CLI composes."""
    import click
    from pyro_vae.cli.main import cli

    known = {"--help", "--version", "--nproc-per-node", "--logdir", "--no"}
    for command in cli.commands.values():
        for param in command.get_params(click.Context(command)):
            known.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    named = {}
    for path in modules(PACKAGES).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in flags_named_in(node.value):
                    named.setdefault(flag, f"{path.name}:{node.lineno}")
    assert {flag: where for flag, where in named.items() if flag not in known} == {}
    assert flags_named_in("lower --prior-components or --flow-steps") == ["--prior-components", "--flow-steps"]
    assert not {"--prior-components", "--flow-steps"} <= known  # the control: the names the message once used
