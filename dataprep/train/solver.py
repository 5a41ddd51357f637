"""Caffe's solvers (SGD, Nesterov, Adam) and learning-rate policies, on NumPy or CuPy arrays.

Per parameter the rate is ``lr * lr_mult`` and the L2 weight decay ``weight_decay *
decay_mult`` (added to the gradient, Caffe's regularization), so biases with decay_mult 0
are not decayed. The update rules are Caffe's, term by term (``docs/formats.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..transforms import get_xp as xp_of
from .layers import Layer

SOLVER_TYPES = ("SGD", "Nesterov", "Adam")
LR_POLICIES = ("fixed", "step", "multistep", "inv", "poly", "exp")


@dataclass(frozen=True)
class SolverConfig:
    """The recipe's ``solver`` section: what the update and the schedule need."""

    type: str = "SGD"
    base_lr: float = 0.01
    momentum: float = 0.9
    momentum2: float = 0.999  # Adam's second moment decay
    delta: float = 1e-8  # Adam's epsilon
    weight_decay: float = 0.0
    lr_policy: str = "fixed"
    gamma: float = 0.1
    stepsize: int = 1
    stepvalue: tuple[int, ...] = ()
    power: float = 1.0
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.type not in SOLVER_TYPES:
            raise UsageError(f"solver.type {self.type!r}: choose from {', '.join(SOLVER_TYPES)}")
        if self.lr_policy not in LR_POLICIES:
            raise UsageError(f"solver.lr_policy {self.lr_policy!r}: choose from {', '.join(LR_POLICIES)}")
        if self.lr_policy == "step" and self.stepsize < 1:
            raise UsageError("solver.stepsize must be at least 1 for lr_policy step")


def learning_rate(config: SolverConfig, iteration: int) -> float:
    """The rate at ``iteration``, as Caffe's ``GetLearningRate``."""
    base, gamma, it = config.base_lr, config.gamma, iteration
    policy = config.lr_policy
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (it // config.stepsize)
    if policy == "multistep":
        return base * gamma ** sum(1 for v in config.stepvalue if it >= v)
    if policy == "exp":
        return base * gamma**it
    if policy == "inv":
        return base * (1 + gamma * it) ** (-config.power)
    return base * (1 - it / config.max_iter) ** config.power  # poly


@dataclass
class Solver:
    """Updates a net's parameters from their gradients; ``history`` (and Adam's second
    moments) persist between steps, and are what a snapshot saves besides the weights."""

    config: SolverConfig
    iteration: int = 0
    history: list[Any] = field(default_factory=list)
    history2: list[Any] = field(default_factory=list)
    scratch: list[Any] = field(default_factory=list)  # one buffer per parameter, reused

    def step(self, params: list[tuple[Layer, int]]) -> float:
        """One update of every parameter with a gradient; returns the rate used."""
        cfg = self.config
        rate = learning_rate(cfg, self.iteration)
        if not self.history:
            self.history = [xp_of(layer.params[i]).zeros_like(layer.params[i]) for layer, i in params]
            self.history2 = [h.copy() for h in self.history] if cfg.type == "Adam" else []
        if len(self.scratch) != len(self.history):
            self.scratch = [xp_of(h).empty_like(h) for h in self.history]
        for k, (layer, i) in enumerate(params):
            grad = layer.grads[i]
            if grad is None or not layer.lr_mult[i]:
                continue
            w, history, step = layer.params[i], self.history[k], self.scratch[k]
            decay = cfg.weight_decay * layer.decay_mult[i]
            local = rate * layer.lr_mult[i]
            # in place, each operation Caffe's and in its order: the same bytes as
            # out-of-place arithmetic, without a full-size temporary per term
            if decay:
                xp_of(w).multiply(w, decay, out=step)
                step += grad
                grad = step  # the regularized gradient
            if cfg.type != "Adam":
                xp_of(w).multiply(grad, local, out=step)
            if cfg.type == "SGD":
                history *= cfg.momentum
                history += step
                w -= history
            elif cfg.type == "Nesterov":
                previous = history * cfg.momentum
                xp_of(w).add(previous, step, out=history)
                xp_of(w).multiply(history, 1 + cfg.momentum, out=step)
                step -= previous
                w -= step
            else:  # Adam, as Caffe's AdamSolver
                xp = xp_of(w)
                t = self.iteration + 1
                self.history[k] = cfg.momentum * self.history[k] + (1 - cfg.momentum) * grad
                self.history2[k] = cfg.momentum2 * self.history2[k] + (1 - cfg.momentum2) * grad * grad
                correction = math.sqrt(1 - cfg.momentum2**t) / (1 - cfg.momentum**t)
                w -= local * correction * self.history[k] / (xp.sqrt(self.history2[k]) + cfg.delta)
        self.iteration += 1
        return rate
