"""`pyro-vae explore`: each endpoint's answer against the library's own encode/decode on the same inputs, through a
real server on an ephemeral port; bad requests get one line and a 4xx while the server keeps serving; the command
starts, serves and stops on Ctrl-C; and TensorBoard's projector gets the validation latents."""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_run
from PIL import Image
from test_cli import assert_one_line_error, run_cli

from pyro_vae import pipeline, plots
from pyro_vae.explorer import Endpoints, latent_space, load_latent_space, make_server
from pyro_vae.explorer.latent_space import lerp, slerp
from pyro_vae.explorer.server import is_loopback, static_files
from pyro_vae.inference.latents import posterior_moments
from pyro_vae.model.hierarchical import loc_scale
from pyro_vae.training.callbacks import TensorBoard

POINTS = 300
LEVEL = 0.5 / 255 + 1e-6  # PNG's 8-bit rounding


@contextmanager
def serving(space):
    """A real server for ``space`` on a free port of 127.0.0.1, in a thread; yields (host, port)."""
    server = make_server(Endpoints(space), "127.0.0.1", 0, log=lambda line: None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ask(address, method, path, body=None, headers=None):
    """``(status, content type, body bytes)`` of one request on a fresh connection."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, data, headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def post(address, name, params):
    status, kind, body = ask(address, "POST", f"/api/{name}", params, {"Content-Type": "application/json"})
    assert status == 200, body
    return json.loads(body) if kind == "application/json" else picture(body)


def picture(png: bytes) -> torch.Tensor:
    """A PNG as floats ``(C, H, W)`` in [0, 1]."""
    levels = torch.from_numpy(np.array(Image.open(io.BytesIO(png))))
    return (levels.unsqueeze(0) if levels.dim() == 2 else levels.permute(2, 0, 1)).float() / 255


def tiles(strip: torch.Tensor, width: int) -> torch.Tensor:
    """A strip ``(C, H, n*W)`` as ``(n, C, H, W)``."""
    c, h, total = strip.shape
    return strip.reshape(c, h, total // width, width).permute(2, 0, 1, 3)


def assert_png_is(png_pictures: torch.Tensor, expected: torch.Tensor) -> None:
    assert png_pictures.shape == expected.shape
    assert (png_pictures - expected.cpu()).abs().max() <= LEVEL


@pytest.fixture(scope="module")
def space(trained, data_dir):
    return load_latent_space(trained.checkpoint_path, data_dir=data_dir, limit=POINTS, device="cpu")


@pytest.fixture(scope="module")
def address(space):
    with serving(space) as found:
        yield found


@pytest.fixture(scope="module")
def split_images(trained, data_dir):
    """The first POINTS test images as the model sees them, and their labels."""
    from pyro_vae import VAEData

    data = VAEData(trained.config.data, data_dir, splits=("test",))
    return data.observed("test")[:POINTS], data.labels["test"][:POINTS]


# -- the endpoints against the library -------------------------------------------------------------------------------


def test_points_are_the_posterior_means_encode_writes(address, space, trained, data_dir, split_images):
    encoded = pipeline.encode_checkpoint(trained.checkpoint_path, data_dir=data_dir, limit=POINTS, device="cpu")
    x, labels = split_images
    means = posterior_moments(space.vae, x)[0]
    assert torch.equal(encoded["means"], means)
    found = post(address, "points", {"view": "coords", "x": 2, "y": 5})
    assert len(found["x"]) == POINTS and found["labels"] == labels.tolist()
    assert torch.equal(torch.tensor(found["x"]), means[:, 2]) and torch.equal(torch.tensor(found["y"]), means[:, 5])
    assert not torch.equal(torch.tensor(found["x"]), means[:, 3])  # negative control: another coordinate differs
    pca = post(address, "points", {"view": "pca"})
    xy, _ = plots.pca_2d(means)
    assert torch.allclose(torch.tensor(pca["x"]), xy[:, 0], atol=1e-5) and pca["axes"][0].startswith("PC1")


def test_encode_gives_the_point_mean_and_scale(address, space):
    found = post(address, "encode", {"index": 17})
    assert torch.equal(torch.tensor(found["mean"]), space.means[17])
    assert torch.equal(torch.tensor(found["scale"]), space.scales[17])
    assert found["label"] == int(space.labels[17]) and found["decode_label"] is None


def test_image_is_the_split_image(address, split_images):
    x, _ = split_images
    shown = post(address, "image", {"index": 7})
    assert_png_is(shown, x[7].reshape(1, 28, 28))
    assert (shown - x[8].reshape(1, 28, 28)).abs().max() > 0.5  # negative control: not image 8


def test_decoded_png_is_the_decoder_mean_to_8_bit_rounding(address, space):
    z = space.means[3].clone()
    z[1] = float(space.high[1])
    shown = post(address, "decode", {"z": z.tolist()})
    assert_png_is(shown, plots.decode(space.vae, z[None])[0])
    other = plots.decode(space.vae, space.means[4][None])[0]
    assert (shown - other).abs().max() > 10 * LEVEL  # negative control: another z decodes otherwise


def test_traverse_decodes_along_the_slider_range(address, space):
    z, k = space.means[0].clone(), 4
    strip = post(address, "traverse", {"z": z.tolist(), "coordinate": k, "steps": 5})
    assert strip.shape == (1, 28, 5 * 28)
    along = z.repeat(5, 1)
    along[:, k] = torch.linspace(float(space.low[k]), float(space.high[k]), 5)
    assert_png_is(tiles(strip, 28), plots.decode(space.vae, along))
    assert float(space.low[k]) < -2 and float(space.high[k]) > 2  # a standard normal's central 99%: about ±2.58


def test_interpolation_linear_and_spherical(address, space):
    a, b = space.means[0], space.means[1]
    t = torch.linspace(0, 1, 6).unsqueeze(1)
    linear = tiles(post(address, "interpolate", {"a": 0, "b": 1, "steps": 6}), 28)
    spherical = tiles(post(address, "interpolate", {"a": 0, "b": 1, "steps": 6, "mode": "spherical"}), 28)
    assert_png_is(linear, plots.decode(space.vae, lerp(a, b, t)))
    assert_png_is(spherical, plots.decode(space.vae, slerp(a, b, t)))
    assert_png_is(linear[0], plots.decode(space.vae, a[None])[0])  # both ends are the points' own decodings
    assert_png_is(spherical[-1], plots.decode(space.vae, b[None])[0])
    assert (linear[2:4] - spherical[2:4]).abs().max() > LEVEL  # negative control: the two paths differ between


def test_slerp_keeps_to_the_great_circle():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    t = torch.linspace(0, 1, 7).unsqueeze(1)
    path = slerp(a, b, t)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b, atol=1e-6)
    assert torch.allclose(path.norm(dim=1), torch.ones(7))  # on the unit circle throughout
    angles = torch.atan2(path[:, 1], path[:, 0])
    assert torch.allclose(angles, t.squeeze(1) * torch.pi / 2, atol=1e-6)  # at even angles
    assert not torch.allclose(lerp(a, b, t)[3].norm(), torch.tensor(1.0))  # negative control: the line cuts inside
    assert torch.allclose(slerp(a, 3 * a, t), lerp(a, 3 * a, t))  # parallel: the straight line


def test_samples_are_pyro_vae_sample_with_the_same_seed(address, trained):
    state = torch.get_rng_state()
    strip = post(address, "sample", {"n": 6, "seed": 3})
    assert torch.equal(torch.get_rng_state(), state)  # the process's RNG is untouched
    expected = pipeline.sample_checkpoint(trained.checkpoint_path, 6, seed=3, device="cpu")
    assert_png_is(tiles(strip, 28), expected)
    other = tiles(post(address, "sample", {"n": 6, "seed": 4}), 28)
    assert (other - expected).abs().max() > 10 * LEVEL  # negative control: another seed draws others


def test_info_describes_the_model_and_the_limits(address, space):
    info = post(address, "info", {})
    assert info["count"] == POINTS and info["latent_dims"] == [8] and info["classes"] == []
    assert info["legend"] == [str(i) for i in range(10)] and info["view"] == "pca"
    assert info["slider"]["low"] == space.low.tolist() and info["limits"]["max_strip"] == 32


def test_the_page_is_the_packaged_whitelist(address):
    files = static_files()
    status, kind, body = ask(address, "GET", "/")
    assert status == 200 and kind.startswith("text/html") and body == files["/"][0]
    assert b'src="explore.js"' in body and b"http" not in body.split(b"-->", 1)[1]  # nothing from elsewhere
    status, kind, body = ask(address, "GET", "/explore.js")
    assert status == 200 and kind.startswith("text/javascript") and b"window.explore" in body
    assert ask(address, "GET", "/explore.css")[0] == 200


def test_concurrent_requests_each_get_their_own_answer(address, space):
    expected = {i: plots.decode(space.vae, space.means[i][None])[0] for i in range(4)}
    failures = []

    done = []

    def client(i):
        for _ in range(3):
            try:
                assert_png_is(post(address, "decode", {"z": space.means[i].tolist()}), expected[i])
                done.append(i)
            except Exception as exc:  # pragma: no cover - reported below (a reset connection too)
                failures.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == [] and not any(t.is_alive() for t in threads) and len(done) == 12


# -- bad requests ----------------------------------------------------------------------------------------------------

Z8 = ",".join(["0"] * 8)
BAD_REQUESTS = [
    ("GET", "/api/decode?z=1,2", None, 400, "expected 8 numbers"),
    ("GET", f"/api/decode?z={Z8[:-1]}nan", None, 400, "not a finite number"),
    ("GET", f"/api/decode?z={Z8[:-1]}1e9", None, 400, "outside the accepted"),
    ("GET", f"/api/decode?z={Z8}&label=1", None, 400, "no classes"),
    ("GET", f"/api/decode?z={Z8}&layer=2", None, 400, "out of range 1..1"),
    ("GET", f"/api/traverse?z={Z8}&coordinate=8", None, 400, "coordinate: 8 is out of range 0..7"),
    ("GET", f"/api/traverse?z={Z8}&coordinate=0&steps=100000", None, 400, "steps: 100000 is out of range 2..32"),
    ("GET", "/api/sample?n=33", None, 400, "n: 33 is out of range 1..32"),
    ("GET", "/api/sample?seed=-1", None, 400, "out of range"),
    ("GET", f"/api/encode?index={POINTS}", None, 400, f"index: {POINTS} is out of range"),
    ("GET", "/api/encode?index=1.5", None, 400, "not a whole number"),
    ("GET", "/api/encode?index=1&index=2", None, 400, "more than once"),
    ("GET", "/api/encode?index=1&path=/etc/passwd", None, 400, "unknown parameter 'path'"),
    ("GET", "/api/interpolate?a=0&b=1&mode=cubic", None, 400, "not one of linear, spherical"),
    ("GET", "/api/points?view=coords&x=9", None, 400, "x: 9 is out of range"),
    ("GET", "/api/nothing", None, 404, "no endpoint /api/nothing"),
    ("GET", "/etc/passwd", None, 404, "no such page"),
    ("GET", "/../pyproject.toml", None, 404, "no such page"),
    ("GET", "/static/explore.js", None, 404, "no such page"),
    ("GET", "/server.py", None, 404, "no such page"),
    ("POST", "/api/decode", b"{not json", 400, "not JSON"),
    ("POST", "/api/decode", b"[1, 2]", 400, "JSON object"),
    ("POST", "/api/decode", b'{"z": ["a", 0, 0, 0, 0, 0, 0, 0]}', 400, "z[0]: 'a' is not a finite number"),
    ("POST", "/api/decode", b'{"z": [0, 0, 0, [1], 0, 0, 0, 0]}', 400, "z[3]: [1] is not a finite number"),
    ("POST", "/api/decode", b'{"z": {"a": 1}}', 400, "expected 8 numbers"),
    ("POST", "/api/decode", b'{"z": [1' + b"0" * 400 + b", 0, 0, 0, 0, 0, 0, 0]}", 400, "z[0]: 1000"),
    ("POST", "/api/encode", b'{"index": true}', 400, "not a whole number"),
    ("POST", "/api/decode", b"[" * 200_000, 400, "not JSON"),  # (deeper than the JSON parser recurses)
    ("POST", "/api/encode?index=1", b'{"index": 1}', 400, "not both"),
    ("POST", "/", b"{}", 405, "is a page"),
    ("PUT", "/api/decode", b"{}", 405, "GET or POST"),
    ("DELETE", "/", None, 405, "GET or POST"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS, ids=lambda v: str(v)[:40])
def test_a_bad_request_gets_one_line_and_a_4xx(address, method, path, body, status, message):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    found, kind, answer = ask(address, method, path, body, headers)
    lines = answer.decode().strip().splitlines()
    assert (found, kind) == (status, "text/plain; charset=utf-8") and len(lines) == 1 and message in lines[0], lines
    assert ask(address, "GET", "/api/info")[0] == 200  # and the server keeps serving


def raw_request(address, data: bytes) -> bytes:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_other_sites_pages_are_refused_and_the_servers_own_is_not(address):
    """A page on another site can send requests to a loopback port (its browser says where it comes from): the
    explorer answers only its own page. The negative control: the same request from the page's own origin."""
    host = f"{address[0]}:{address[1]}"
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        status, _, body = ask(address, "GET", "/api/image?index=0", None, headers)
        assert status == 403 and b"other sites" in body, (headers, body)
    own = {"Sec-Fetch-Site": "same-origin", "Origin": f"http://{host}"}
    status, _, body = ask(address, "POST", "/api/encode", {"index": 0}, {**own, "Content-Type": "application/json"})
    assert status == 200, body


def test_the_scatter_of_one_point_has_two_axes(trained, data_dir):
    single = load_latent_space(trained.checkpoint_path, data_dir=data_dir, limit=1, device="cpu")
    x, y, axes = single.points("pca")
    assert x.shape == y.shape == (1,) and "nan" not in " ".join(axes)


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", b"400", b"Bad request"),
        (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999\r\n\r\n", b"413", b"at most"),
        (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411", b"Length"),
        (b"GET /api/info HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n", b"403", b"loopback"),
        (b"GET /api/info HTTP/1.1\r\nHost: [\r\nConnection: close\r\n\r\n", b"400", b"unreadable Host"),
        (b"POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0_2\r\n\r\n{}", b"400", b"not a number"),
    ],
)
def test_malformed_requests_get_one_line_too(address, request_bytes, status, message):
    answer = raw_request(address, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status and len(body.strip().splitlines()) == 1 and message in body, answer
    assert ask(address, "GET", "/api/info")[0] == 200


def test_a_failed_connection_is_one_line_or_nothing_never_a_traceback(space, capsys):
    lines = []
    server = make_server(Endpoints(space), "127.0.0.1", 0, log=lines.append)
    try:
        for exc in (BrokenPipeError(32, "Broken pipe"), ValueError("odd\nsecond line")):
            try:
                raise exc
            except Exception:
                server.handle_error(None, ("127.0.0.1", 5))
    finally:
        server.server_close()
    assert lines == ["pyro-vae explore: a connection from 127.0.0.1 failed: odd"]  # the client that left: nothing
    assert capsys.readouterr().err == ""


def test_only_loopback_hosts_count_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("no-such-host.invalid")


def test_the_process_state_is_untouched_by_building_a_space(space, split_images):
    x, labels = split_images
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    built = latent_space(space.vae, x[:50], labels[:50], None, "fifty")
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert built.count == 50


# -- other structures and colour -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conditional(tmp_path_factory, data_dir):
    run = small_run(tmp_path_factory.mktemp("cvae"), data_dir, epochs=1, structure="conditional", train_limit=500)
    run.fit()
    return run


def test_a_model_with_labels_decodes_the_chosen_class(conditional, data_dir):
    space = load_latent_space(conditional.checkpoint_path, data_dir=data_dir, limit=40, device="cpu")
    with serving(space) as address:
        info = post(address, "info", {})
        assert info["classes"] == [str(i) for i in range(10)]
        z = space.means[0]
        found, _, answer = ask(address, "GET", "/api/decode?z=" + ",".join(map(str, z.tolist())))
        assert found == 400 and b"decodes a class" in answer
        three = post(address, "decode", {"z": z.tolist(), "label": 3})
        assert_png_is(three, plots.decode(space.vae, z[None], torch.tensor([3]))[0])
        assert (three - post(address, "decode", {"z": z.tolist(), "label": "7"})).abs().max() > 10 * LEVEL
        assert ask(address, "GET", "/api/decode?label=10&z=" + ",".join(map(str, z.tolist())))[0] == 400
        assert post(address, "encode", {"index": 5})["decode_label"] == int(space.labels[5])
        strip = tiles(post(address, "sample", {"n": 4, "seed": 1, "label": 2}), 28)
        torch.manual_seed(1)
        expected = plots.sample_images(space.vae, 4, labels=torch.full((4,), 2))
        assert_png_is(strip, expected)


@pytest.fixture(scope="module")
def hierarchical(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("two")
    run = small_run(out, data_dir, epochs=1, structure="hierarchical", latent_dims=(8, 4), train_limit=500)
    run.fit()
    return run


def test_a_hierarchical_model_decodes_from_the_chosen_layer(hierarchical, data_dir):
    space = load_latent_space(hierarchical.checkpoint_path, data_dir=data_dir, limit=40, device="cpu")
    vae = space.vae
    z = space.means[0].clone()
    z[9] = 1.5  # a coordinate of z2
    below = loc_scale(vae.conditionals[0](z[8:][None]))[0]  # E[z1 | z2]
    with serving(space) as address:
        info = post(address, "info", {})
        assert [layer["size"] for layer in info["layers"]] == [8, 4] and info["coordinates"][8] == "z2[0]"
        from_z2 = post(address, "decode", {"z": z.tolist(), "layer": 2})
        assert_png_is(from_z2, plots.decode(vae, below)[0])
        from_z1 = post(address, "decode", {"z": z.tolist(), "layer": 1})
        assert_png_is(from_z1, plots.decode(vae, z[None])[0])
        assert (from_z1 - from_z2).abs().max() > LEVEL  # negative control: the layer chosen matters
        strip = tiles(post(address, "traverse", {"z": z.tolist(), "coordinate": 9, "steps": 3}), 28)
        along = z.repeat(3, 1)
        along[:, 9] = torch.linspace(float(space.low[9]), float(space.high[9]), 3)
        assert_png_is(strip, plots.decode(vae, loc_scale(vae.conditionals[0](along[:, 8:]))[0]))


def write_colour_folder(folder: Path, n: int = 48, size: int = 16) -> Path:
    """``n`` random colour pictures in two classes (a bright and a dark half), as an image folder."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", n), ("test", n // 4), ("val", n // 4)):
        for name in ("bright", "dark"):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = ("bright", "dark")[i % 2]
            base = (0.6 if name == "bright" else 0.0) + 0.4 * torch.rand(size, size, 3, generator=g)
            Image.fromarray((base * 255).round().byte().numpy()).save(folder / split / name / f"{i:03d}.png")
    return folder


def test_a_colour_conv_model_gets_colour_pngs(tmp_path, capsys):
    folder = write_colour_folder(tmp_path / "pictures")
    data = ["--dataset", "folder", "--data-dir", folder, "--binarize", "none"]
    model = ["--likelihood", "gaussian", "--net", "conv", "--conv-channels", "8,16", "--hidden", "32"]
    model += ["--latent-dim", "4"]
    run = ["--epochs", "1", "--batch-size", "16", "--no-progress", "--out", tmp_path / "run"]
    code, _, err = run_cli(["train", *data, *model, *run], capsys)
    assert code == 0, err
    space = load_latent_space(tmp_path / "run" / "ckpt.pt", device="cpu")
    assert space.count == 12 and space.classes == [] and space.class_names == ["bright", "dark"]
    with serving(space) as address:
        image = post(address, "image", {"index": 2})
        original = torch.from_numpy(np.array(Image.open(sorted((folder / "test").rglob("*.png"))[2])))
        assert image.shape == (3, 16, 16) and torch.equal((image * 255).round().byte(), original.permute(2, 0, 1))
        shown = post(address, "decode", {"z": space.means[2].tolist()})
        assert_png_is(shown, plots.decode(space.vae, space.means[2][None])[0])


# -- the command -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_serves_the_page_and_stops_on_ctrl_c(trained, data_dir):
    process = subprocess.Popen(
        [
            Path(sys.executable).with_name("pyro-vae"),
            "explore",
            "--checkpoint",
            trained.checkpoint_path,
            "--data-dir",
            data_dir,
            "--limit",
            "50",
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # (even when pytest runs in the background)
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("explore the latent space at http://127.0.0.1:"), process.stderr.read()
        host, port = line.split("http://")[1].split("/")[0].split(":")
        assert post((host, int(port)), "info", {})["count"] == 50
        assert ask((host, int(port)), "GET", "/")[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and err.strip().splitlines()[-1] == "stopped (Ctrl-C)" and "Traceback" not in err


def test_the_command_refuses_bad_input_in_one_line(trained, data_dir, tmp_path, capsys):
    code, _, err = run_cli(["explore", "--checkpoint", tmp_path / "missing.pt"], capsys)
    assert_one_line_error(code, err)
    code, _, err = run_cli(["explore", "--checkpoint", trained.checkpoint_path, "--port", "70000"], capsys)
    assert_one_line_error(code, err, "--port")
    code, _, err = run_cli(["explore", "--checkpoint", trained.checkpoint_path, "--limit", "0"], capsys)
    assert_one_line_error(code, err, "--limit")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["explore", "--checkpoint", trained.checkpoint_path, "--data-dir", data_dir, "--limit", "20"]
        code, out, err = run_cli([*args, "--port", port, "--device", "cpu"], capsys)
    assert_one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}")
    assert "--port" in err and out == ""


def test_the_command_keeps_the_trust_rules(trained, data_dir, tmp_path, capsys):
    ckpt = torch.load(trained.checkpoint_path, weights_only=True)
    ckpt["config"]["model"]["prior"] = {"name": "system", "module": "os", "command": f"touch {tmp_path / 'pwned'}"}
    crafted = tmp_path / "crafted.pt"
    torch.save(ckpt, crafted)
    code, _, err = run_cli(["explore", "--checkpoint", crafted, "--data-dir", data_dir, "--port", "0"], capsys)
    assert_one_line_error(code, err, "not trusted")
    assert not (tmp_path / "pwned").exists()


# -- TensorBoard's embedding projector -------------------------------------------------------------------------------


def projector_rows(log_dir: Path) -> dict[str, list[str]]:
    """Each projector file's lines (tensors.tsv, metadata.tsv), by name."""
    found = {}
    for name in ("tensors.tsv", "metadata.tsv"):
        files = list(log_dir.rglob(name))
        found[name] = files[0].read_text().splitlines() if len(files) == 1 else files
    return found


def test_tensorboard_writes_the_validation_latents_to_the_projector(tmp_path, data_dir):
    board = TensorBoard(embedding_images=120)
    run = small_run(tmp_path / "run", data_dir, epochs=1, train_limit=600, callbacks=[board])
    run.fit()
    log_dir = tmp_path / "run" / "tensorboard"
    rows = projector_rows(log_dir)
    assert len(rows["tensors.tsv"]) == 120 and len(rows["tensors.tsv"][0].split("\t")) == 8
    val = run.data.images["val"][:120]
    means = posterior_moments(run.vae, val)[0]
    written = torch.tensor([[float(v) for v in row.split("\t")] for row in rows["tensors.tsv"]])
    assert torch.allclose(written, means.cpu(), atol=1e-5)
    assert rows["metadata.tsv"] == [str(int(label)) for label in run.data.labels["val"][:120]]
    assert len(list(log_dir.rglob("sprite.png"))) == 1 and len(list(log_dir.rglob("projector_config.pbtxt"))) == 1
    assert (tmp_path / "run" / "tensorboard" / "00001" / "val_posterior_means").is_dir()


def test_no_projector_without_tensorboard_or_with_zero_images(tmp_path, data_dir, trained):
    assert not (trained.out_dir / "tensorboard").exists()  # a run without --tensorboard writes none
    run = small_run(tmp_path / "run", data_dir, epochs=1, train_limit=300, callbacks=[TensorBoard(embedding_images=0)])
    run.fit()
    assert (tmp_path / "run" / "tensorboard").is_dir()
    assert projector_rows(tmp_path / "run" / "tensorboard") == {"tensors.tsv": [], "metadata.tsv": []}


@pytest.mark.slow
def test_the_latency_benchmark_runs(trained, data_dir, tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "explore_latency.py"
    ckpt = str(trained.checkpoint_path)
    models = ["--mlp", ckpt, "--conv", ckpt, "--colour", ckpt]
    out = tmp_path / "latency.json"
    found = subprocess.run(
        [sys.executable, script, "--data-dir", data_dir, *models, "--requests", "3", "--out", out],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert found.returncode == 0, found.stderr
    results = json.loads(out.read_text())
    assert [r["model"] for r in results] == ["mlp", "conv", "colour"]
    timings = [timing for r in results for timing in r["endpoints"].values()]
    assert len(timings) == 3 * 7 and all(t["requests"] == 3 and 0 < t["median_ms"] <= t["p95_ms"] for t in timings)
