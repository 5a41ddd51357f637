"""Caffe's six solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) and learning-rate
policies, on NumPy or CuPy arrays.

Caffe's ApplyUpdate, in its order: clip the gradients (their global L2 norm scaled down to
``clip_gradients``), then per parameter normalize (divide by ``iter_size``, the passes the
gradients were summed over), regularize (``weight_decay * decay_mult`` times the weight,
L2, or its sign, L1), and compute the update at ``lr * lr_mult``. The rules are Caffe's,
term by term (``docs/formats.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..transforms import get_xp as xp_of
from .layers import Layer
from .layers.threads import compiled_loops

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "multistep", "inv", "poly", "exp", "sigmoid")
TWO_HISTORIES = ("AdaDelta", "Adam")  # a second history per parameter (squared updates, moments)


@dataclass(frozen=True)
class SolverConfig:
    """The recipe's ``solver`` section: what the update and the schedule need."""

    type: str = "SGD"
    base_lr: float = 0.01
    momentum: float = 0.9
    momentum2: float = 0.999  # Adam's second moment decay
    delta: float = 1e-8  # AdaGrad's, RMSProp's, AdaDelta's and Adam's epsilon
    rms_decay: float = 0.99  # RMSProp's decay of the squared gradients
    weight_decay: float = 0.0
    regularization_type: str = "L2"  # or L1: the decay times the weight's sign
    iter_size: int = 1  # forward-backward passes summed into one update (a larger batch)
    clip_gradients: float = -1.0  # the gradients' global L2 norm is scaled down to this; < 0: off
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
        if self.regularization_type not in ("L1", "L2"):
            raise UsageError(f"solver.regularization_type {self.regularization_type!r}: choose L1 or L2")
        if self.iter_size < 1:
            raise UsageError(f"solver.iter_size {self.iter_size}: give 1 or more")


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
    if policy == "sigmoid":
        return base / (1 + math.exp(-gamma * (it - config.stepsize)))
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

    def step(self, params: list[tuple[Layer, int]], say=None) -> float:
        """One update of every parameter with a gradient (Caffe's ApplyUpdate); returns the
        rate used. ``say`` receives Caffe's gradient-clipping line."""
        cfg = self.config
        rate = learning_rate(cfg, self.iteration)
        if not self.history:
            self.history = [xp_of(layer.params[i]).zeros_like(layer.params[i]) for layer, i in params]
            self.history2 = [h.copy() for h in self.history] if cfg.type in TWO_HISTORIES else []
        if len(self.scratch) != len(self.history):
            self.scratch = [xp_of(h).empty_like(h) for h in self.history]
        if cfg.clip_gradients >= 0:
            self._clip(params, say)
        for k, (layer, i) in enumerate(params):
            grad = layer.grads[i]
            if grad is None or not layer.lr_mult[i]:
                continue
            w, history, step = layer.params[i], self.history[k], self.scratch[k]
            xp = xp_of(w)
            decay = cfg.weight_decay * layer.decay_mult[i]
            local = rate * layer.lr_mult[i]
            loops = compiled_loops(xp) if cfg.type in ("SGD", "Nesterov") else None
            if loops and all(a.flags.c_contiguous for a in (w, grad, history)):
                kind = w.dtype.type  # the scalars rounded as NumPy rounds them against the arrays
                scale = kind(1 / cfg.iter_size if cfg.iter_size > 1 else 1)
                l1 = cfg.regularization_type == "L1"
                nesterov = kind(1 + cfg.momentum if cfg.type == "Nesterov" else 0)
                loops.sgd_update(
                    w, grad, history, scale, kind(decay), l1, kind(local), kind(cfg.momentum), nesterov
                )
                continue
            # in place, each operation Caffe's and in its order: the same bytes as
            # out-of-place arithmetic, without a full-size temporary per term
            if cfg.iter_size > 1 or decay:
                xp.multiply(grad, 1 / cfg.iter_size, out=step) if cfg.iter_size > 1 else xp.copyto(step, grad)
                if decay:
                    step += decay * (xp.sign(w) if cfg.regularization_type == "L1" else w)
                grad = step  # the normalized, regularized gradient
            if cfg.type in ("SGD", "Nesterov"):
                xp.multiply(grad, local, out=step)
            if cfg.type == "SGD":
                history *= cfg.momentum
                history += step
                w -= history
            elif cfg.type == "Nesterov":
                previous = history * cfg.momentum
                xp.add(previous, step, out=history)
                xp.multiply(history, 1 + cfg.momentum, out=step)
                step -= previous
                w -= step
            elif cfg.type == "AdaGrad":  # history: the sum of squared gradients
                history += grad * grad
                w -= grad / (xp.sqrt(history) + cfg.delta) * local
            elif cfg.type == "RMSProp":  # history: their running mean
                history *= cfg.rms_decay
                history += (1 - cfg.rms_decay) * grad * grad
                w -= grad / (xp.sqrt(history) + cfg.delta) * local
            elif cfg.type == "AdaDelta":  # history: squared gradients; history2: squared updates
                history *= cfg.momentum
                history += (1 - cfg.momentum) * grad * grad
                update = grad * xp.sqrt((self.history2[k] + cfg.delta) / (history + cfg.delta))
                self.history2[k] *= cfg.momentum
                self.history2[k] += (1 - cfg.momentum) * update * update
                w -= local * update
            else:  # Adam, as Caffe's AdamSolver
                t = self.iteration + 1
                self.history[k] = cfg.momentum * self.history[k] + (1 - cfg.momentum) * grad
                self.history2[k] = cfg.momentum2 * self.history2[k] + (1 - cfg.momentum2) * grad * grad
                correction = math.sqrt(1 - cfg.momentum2**t) / (1 - cfg.momentum**t)
                w -= local * correction * self.history[k] / (xp.sqrt(self.history2[k]) + cfg.delta)
        self.iteration += 1
        return rate

    def _clip(self, params: list[tuple[Layer, int]], say) -> None:
        """Caffe's ClipGradients: when the L2 norm of every gradient together passes
        ``clip_gradients``, scale them all down to it, and say so as Caffe does."""
        grads = [layer.grads[i] for layer, i in params if layer.grads[i] is not None]
        if not grads:
            return
        norm = math.sqrt(sum(float((g.astype("float64") ** 2).sum()) for g in grads))
        limit = self.config.clip_gradients
        if norm > limit:
            factor = limit / norm
            if say is not None:
                say(
                    f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > {limit:g}) "
                    f"by scale factor {factor:g}"
                )
            for g in grads:
                g *= factor
