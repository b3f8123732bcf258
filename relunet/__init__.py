"""relunet: the energy landscape of a small ReLU network (Gamst & Walker 2017)."""
from . import _numba  # noqa: F401  (sets up a writable numba cache first)
from .kernels import forward, loss, loss_and_grad
from .net import Arch, init_stack
from .optim import Adadelta, Momentum, make_optimizer
from .train import TrainResult, train_stack

__version__ = "0.1.0"
__all__ = ["Arch", "init_stack", "forward", "loss", "loss_and_grad", "Momentum", "Adadelta",
           "make_optimizer", "train_stack", "TrainResult", "__version__"]
