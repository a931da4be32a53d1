"""dualconv: a small CNN library that runs the same code on NumPy and CuPy."""
from . import models
from .backend import asnumpy, get_backend, gpu_available, set_backend, use_backend
from .init import manual_seed
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, HardTanh, Identity,
                     Layer, LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)
from .losses import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, ExponentialLR, LinearLR, StepLR
from .schedules import OneCycleLR, WarmupCosineLR
from .augment import Shift
from .engine import num_threads, release_workers, set_num_threads
from .trainer import Trainer

from .version import __version__

__all__ = [
    "models", "asnumpy", "get_backend", "gpu_available", "set_backend", "use_backend", "manual_seed",
    "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "HardTanh", "Identity",
    "Layer", "LeakyReLU", "MaxPool2D", "ReLU", "Sigmoid", "Softmax", "Tanh",
    "BinaryCrossEntropy", "MeanSquaredError", "SoftmaxCrossEntropy",
    "Sequential", "SGD", "Adam", "ExponentialLR", "LinearLR", "StepLR", "Trainer",
    "OneCycleLR", "WarmupCosineLR", "Shift",
    "num_threads", "release_workers", "set_num_threads",
]
