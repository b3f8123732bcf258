"""relunet: the energy landscape of a small ReLU network (Gamst & Walker 2017)."""
from . import _numba  # noqa: F401  (sets up a writable numba cache first)
from .net import Arch, init_stack
from .kernels import forward, loss, loss_and_grad

__version__ = "0.1.0"
__all__ = ["Arch", "init_stack", "forward", "loss", "loss_and_grad", "__version__"]
