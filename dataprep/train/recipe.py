"""Training recipes: one YAML file with ``data``, ``net`` and ``solver`` sections, loaded with
``safe_load`` and validated into dataclasses; every error names the bad key by its path
(``solver.base_lr``, ``net[3].num_output``). ``--set KEY=VALUE`` overrides apply to the
loaded mapping before validation, so they are checked like the file.

Relative paths in a recipe resolve against the current working directory, as Caffe's do.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..augment import check_labels
from ..errors import DataprepError, UsageError
from ..images import parse_size
from ..transforms import AugmentSpec, parse_area_range
from .layers import LAYERS
from .prototxt import layer_keys, self_fed, solver_raw, square_windows
from .prototxt_cache import is_prototxt
from .schema import Transform, build
from .solver import SolverConfig


@dataclass(frozen=True)
class NoiseSpec:
    """A generator source: noise samples ``[offset, offset + n)``, no files written."""

    n: int
    offset: int = 0
    size: str = "100x100"
    seed: int = 0
    classes: int | None = None


@dataclass(frozen=True)
class Source:
    """A training or validation source: a store path (HDF5 list or file, LMDB, LevelDB) or
    a noise generator."""

    path: str | None = None
    noise: NoiseSpec | None = None
    # a list file of images (Caffe's ImageData): paths from root, resized, color or gray
    root: str | None = None
    resize: str | None = None  # HxW, Caffe's new_height x new_width
    color: bool | None = None  # Caffe's is_color; None: as the files are


@dataclass(frozen=True)
class TestNet:
    """A further test net (Caffe's test_state: a stage chosen for it): its own source, batch
    size and test_iter (one pass by default); test net #0 is ``data.val``."""

    source: Source
    stage: str | None = None
    batch_size: int | None = None
    test_iter: int | None = None


@dataclass(frozen=True)
class Data:
    train: Source | None = None  # None: the net's DummyData layers make its inputs
    val: Source | None = None
    batch_size: int = 50
    val_batch_size: int | None = None
    tests: tuple[TestNet, ...] = ()  # further test nets, #1 on (Caffe's several test_state)
    shuffle: bool = True
    input: str = "data"
    target: str = "label"
    transform: Transform = Transform()


@dataclass(frozen=True)
class Augment:
    """Online augmentation of training batches: ``dataprep augment``'s operations with its
    option names (underscores for dashes; ``crop_scale`` as ``[min, max]``), drawn per
    (seed, epoch, sample index) so runs repeat; applied before ``data.transform``."""

    crop: str | None = None
    pad: bool = False
    pad_value: int = 0
    crop_scale: tuple[float, ...] | None = None
    size: str | None = None
    mirror: bool = False
    rotate: float = 0.0
    shift: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    lighting: float = 0.0
    noise: float = 0.0
    force: bool = False  # allow crop_scale and rotate with float (regression) labels
    seed: int | None = None  # resolved to solver.random_seed when not given

    def spec(self) -> AugmentSpec:
        """The ``AugmentSpec`` the ``augment`` command would build; errors name the key."""
        if self.pad and not self.crop:
            raise UsageError("recipe augment.pad: goes with augment.crop")
        area = None
        if self.crop_scale is not None:
            area = parse_area_range(",".join(map(str, self.crop_scale)), "recipe augment.crop_scale")
        return AugmentSpec(
            crop=parse_size(self.crop, "recipe augment.crop") if self.crop else None,
            pad=self.pad,
            pad_value=float(self.pad_value),
            crop_scale=area,
            out_size=parse_size(self.size, "recipe augment.size") if self.size else None,
            mirror=self.mirror,
            rotate=self.rotate,
            shift=self.shift,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            lighting=self.lighting,
            noise=self.noise,
        )


@dataclass(frozen=True)
class Run:
    """The solver section's keys about running rather than updating."""

    max_iter: int = 1000
    display: int = 100
    average_loss: int = 1  # the logged train loss averages this many iterations (Caffe's)
    test_interval: int = 0  # 0: test only at the end
    test_iter: int | None = None  # None: one pass over the validation source
    snapshot: int = 0
    snapshot_prefix: str = "snapshot"
    snapshot_format: str = "npz"  # caffemodel: also {prefix}_iter_N.caffemodel; hdf5: Caffe's .h5 pair
    test_initialization: bool = True  # test at iteration 0 too (Caffe's)
    random_seed: int = 0
    device: str = "cpu"
    keep_best: str | None = None  # a test output: also keep {prefix}_best.npz at its best value
    on_nan: str = "stop"  # a non-finite loss or parameter: stop (exit 1), or continue as Caffe does
    snapshot_after_train: bool = True  # the final snapshot (Caffe's); false: only the interval ones
    debug_info: bool = False  # Caffe's per-blob lines: mean absolute data and diff, each pass

    def __post_init__(self) -> None:
        if self.on_nan not in ("stop", "continue"):
            raise UsageError(f"recipe solver.on_nan {self.on_nan!r}: choose stop or continue")


@dataclass(frozen=True)
class Recipe:
    name: str
    data: Data
    net: list[dict]
    solver: SolverConfig
    run: Run
    augment: Augment | None = None
    raw: dict = field(default_factory=dict, compare=False)  # the resolved mapping, for snapshots


SECTIONS = ("augment", "data", "name", "net", "solver")
RUN_KEYS = {f.name for f in dataclasses.fields(Run)}


def parse_source(value: Any, path: str) -> dict:
    """``train: train_h5.txt`` or ``train: {noise: {...}}`` as Source's mapping."""
    if isinstance(value, str):
        return {"path": value}
    if isinstance(value, dict) and set(value) == {"noise"}:
        return {"noise": value["noise"]}
    if isinstance(value, dict) and "path" in value and set(value) <= {"path", "root", "resize", "color"}:
        return dict(value)  # a list of images with its decoding (Caffe's ImageData)
    raise UsageError(
        f"recipe {path}: give a store path, {{path: LIST, root: DIR, resize: HxW, color: true}} or "
        "{noise: {n: ..., offset: ...}}"
    )


def _net(layers: Any) -> list[dict]:
    if not isinstance(layers, list) or not layers:
        raise UsageError("recipe net: give a list of layers")
    for k, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise UsageError(f"recipe net[{k}]: expected a mapping with name and type")
        if layer.get("type") not in LAYERS:
            raise UsageError(
                f"recipe net[{k}].type: {layer.get('type')!r}: choose from {', '.join(sorted(LAYERS))}"
            )
        valid = layer_keys(layer["type"])
        unknown = sorted(set(layer) - valid)
        if unknown:
            where = f"net[{k}] ({layer['name']})" if "name" in layer else f"net[{k}]"
            raise UsageError(
                f"recipe {where}.{unknown[0]}: not a {layer['type']} key; valid: {', '.join(sorted(valid))}"
            )
        layers[k] = square_windows(dict(layer), f"recipe net[{k}]")
    return layers


class _PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a recipe has no use for them, and ten levels of
    nine-fold aliases in 1 KB (a "billion laughs") would expand without end."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&, *) are not allowed in a recipe", event.start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """A recipe's YAML (or a --set value), refusing anchors and aliases."""
    return yaml.load(text, Loader=_PlainLoader)


def apply_override(raw: dict, assignment: str) -> None:
    """``solver.max_iter=200``: set a key (dotted path, ``net[2].num_output`` for layers);
    the value is YAML (``0.01``, ``true``, ``[1, 2]``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise UsageError(f"--set {assignment!r}: give KEY=VALUE, e.g. solver.max_iter=200")
    try:
        value = load_yaml(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"--set {assignment!r}: {exc}") from None
    target: Any = raw
    parts = key.replace("]", "").replace("[", ".").split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise UsageError(f"--set {key}: no item {part} in {'.'.join(parts[:i]) or 'the recipe'}")
            part = int(part)
        elif not isinstance(target, dict):
            raise UsageError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping")
        if last:
            target[part] = value
        else:
            if isinstance(target, dict):
                target = target.setdefault(part, {})
            else:
                target = target[part]


def parse_recipe(raw: dict, name: str = "recipe") -> Recipe:
    """Validate a loaded recipe mapping."""
    if not isinstance(raw, dict):
        raise UsageError(f"{name}: a recipe is a mapping with data, net and solver")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise UsageError(f"recipe {unknown[0]}: unknown section; valid: {', '.join(SECTIONS)}")
    for section in ("data", "net", "solver"):
        if section not in raw:
            raise UsageError(f"recipe {section}: missing")
    data_raw = dict(raw["data"] or {})
    for split in ("train", "val"):
        if split in data_raw:
            data_raw[split] = parse_source(data_raw[split], f"data.{split}")
    tests = data_raw.get("tests") or []
    if not isinstance(tests, list):
        raise UsageError("recipe data.tests: give a list of {source, stage, batch_size, test_iter}")
    for k, test in enumerate(tests):
        if not isinstance(test, dict) or "source" not in test:
            raise UsageError(f"recipe data.tests[{k}]: give its source")
        tests[k] = {**test, "source": parse_source(test["source"], f"data.tests[{k}].source")}
    if tests and data_raw.get("val") is None:
        raise UsageError("recipe data.tests: further test nets need data.val, test net #0")
    data = build(Data, data_raw, "data")
    solver_raw = dict(raw["solver"] or {})
    solver_keys = RUN_KEYS | {f.name for f in dataclasses.fields(SolverConfig)}
    unknown = sorted(set(solver_raw) - solver_keys)
    if unknown:
        raise UsageError(f"recipe solver.{unknown[0]}: unknown key; valid: {', '.join(sorted(solver_keys))}")
    run = build(Run, {k: v for k, v in solver_raw.items() if k in RUN_KEYS}, "solver")
    update = {k: v for k, v in solver_raw.items() if k not in RUN_KEYS}
    update["max_iter"] = run.max_iter
    solver = build(SolverConfig, update, "solver")
    if run.device not in ("cpu", "gpu"):
        raise UsageError(f"recipe solver.device {run.device!r}: choose cpu or gpu")
    if run.snapshot_format not in ("npz", "caffemodel", "hdf5"):
        raise UsageError(
            f"recipe solver.snapshot_format {run.snapshot_format!r}: choose npz, caffemodel or hdf5"
        )
    _check_noise_ranges(data)
    net = _net(raw["net"])
    if data.train is None and not self_fed(net):
        raise UsageError("recipe data.train: missing (a net without one makes its inputs with DummyData)")
    augment = build(Augment, raw["augment"], "augment") if raw.get("augment") else None
    if augment is not None:
        if augment.seed is None:
            augment = dataclasses.replace(augment, seed=run.random_seed)
        regression = any(layer["type"] in ("EuclideanLoss", "SmoothL1Loss") for layer in net)
        try:  # decided by the recipe alone: a usage error
            check_labels(augment.spec(), regression, augment.force, lambda key: f"recipe augment.{key}")
        except DataprepError as exc:
            raise UsageError(str(exc)) from None
    return Recipe(str(raw.get("name", name)), data, net, solver, run, augment, raw)


def _check_noise_ranges(data: Data) -> None:
    train, val = data.train.noise if data.train else None, data.val.noise if data.val else None
    if train and val and train.seed == val.seed and train.size == val.size:
        if train.offset < val.offset + val.n and val.offset < train.offset + train.n:
            raise UsageError(
                f"recipe data: the train samples [{train.offset}, {train.offset + train.n}) and the "
                f"val samples [{val.offset}, {val.offset + val.n}) overlap: give val another offset"
            )


def yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line for a YAML error: file, line and column, and the parser's words."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: not valid YAML: {problem}"


def shipped_recipe(name: str) -> Path | None:
    """The recipe shipped with dataprep under ``name`` (``noise_stream``), if there is one."""
    from importlib.resources import files

    if not name or "/" in name or Path(name).suffix:
        return None
    candidate = files("dataprep.recipes") / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def shipped_recipes() -> dict[str, str]:
    """Each shipped recipe's name and first comment line (what it trains)."""
    from importlib.resources import files

    found = {}
    for entry in sorted(files("dataprep.recipes").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            first = next((line for line in entry.read_text().splitlines() if line.startswith("#")), "#")
            found[entry.name.removesuffix(".yaml")] = first.lstrip("# ").strip()
    return found


def resolve_recipe(path: str | Path) -> Path:
    """A recipe file, or a shipped recipe by name when no file of that name exists (a
    local file wins)."""
    path = Path(path)
    if path.exists():
        return path
    return shipped_recipe(str(path)) or path


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe file: YAML, or a Caffe solver prototxt; a bare
    name is a shipped recipe (``resolve_recipe``)."""
    path = resolve_recipe(path)
    if is_prototxt(path):  # Caffe's solver.prototxt, with the net it names
        raw = solver_raw(path)
    else:
        try:
            raw = load_yaml(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"{path}: no such recipe") from None
        except (UnicodeDecodeError, ValueError):
            raise UsageError(f"{path}: not a text file (a recipe is YAML)") from None
        except yaml.YAMLError as exc:
            raise UsageError(yaml_error(path, exc)) from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return parse_recipe(raw, path.stem)
