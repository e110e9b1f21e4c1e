"""``pyro-vae explore``: a trained model's latent space as an interactive page, served from this machine.

:mod:`.latent_space` computes (the scatter of a split's posterior means, decodings from a point, along a coordinate,
between two points, from the prior), :mod:`.endpoints` checks each request's parameters and answers in JSON or PNG,
:mod:`.server` serves those endpoints and the page in ``static/`` (plain HTML, JavaScript and CSS shipped in the
package: no CDN, no build step). In a script::

    from pyro_vae.explorer import Endpoints, load_latent_space, make_server

    server = make_server(Endpoints(load_latent_space("runs/mnist-mlp/ckpt.pt")), port=0)
    print(server.url)
    server.serve_forever()
"""

from .endpoints import Endpoints, RequestError
from .latent_space import LatentSpace, latent_space, load_latent_space
from .server import ExplorerServer, make_server

__all__ = [
    "Endpoints",
    "ExplorerServer",
    "LatentSpace",
    "RequestError",
    "latent_space",
    "load_latent_space",
    "make_server",
]
