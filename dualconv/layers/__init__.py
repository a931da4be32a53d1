"""Every layer of dualconv; see base.py for the contract they share."""
from .activations import HardTanh, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .batchnorm import BatchNorm1D, BatchNorm2D
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .pooling import AvgPool2D, MaxPool2D
from .reshape import Flatten

LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2D, Dense, MaxPool2D, AvgPool2D, Flatten, Dropout,
    ReLU, LeakyReLU, Tanh, HardTanh, Sigmoid, Identity, Softmax, BatchNorm2D, BatchNorm1D)}

__all__ = ["Layer", "LAYER_TYPES", *LAYER_TYPES]
