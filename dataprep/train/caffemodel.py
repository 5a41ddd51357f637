"""Weights as Caffe's ``.caffemodel``: a binary NetParameter whose layers carry their blobs
in Caffe's order and shapes (Convolution weights num_output x channels/group x kh x kw,
then the bias; InnerProduct out x in, then the bias; BatchNorm mean, variance, factor;
Scale gamma, beta). Layers are matched by name, as Caffe's ``CopyTrainedLayersFrom`` does,
so a file Caffe wrote loads here and a file written here loads in Caffe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataprepError, UsageError
from ..gpu import host
from ..staging import Staging
from ..stores.caffe_pb import NetParameter, SolverState, blob_message, blob_to_array
from .net import Net
from .prototxt import layer_message, upgrade_v1


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Each layer's blobs (float32 arrays) by layer name."""
    net = NetParameter()
    try:
        net.ParseFromString(Path(path).read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as exc:  # protobuf's DecodeError, or not a NetParameter at all
        raise DataprepError(f"{path}: not a .caffemodel (binary NetParameter): {exc}") from None
    if net.layers:  # the pre-2015 form: read as Caffe's UpgradeNetAsNeeded reads it
        net = upgrade_v1(net)
    found = {}
    for layer in net.layer:
        try:
            blobs = [blob_to_array(b) for b in layer.blobs]
        except ValueError as exc:
            raise DataprepError(f"{path}: layer {layer.name}: {exc}: a damaged .caffemodel") from None
        if blobs:
            found[layer.name] = blobs
    return found


def copy_weights(net: Net, weights: dict[str, list[np.ndarray]], source: str | Path) -> list[str]:
    """Copy blobs into the net's layers of the same name (fine-tuning: other layers keep
    their fillers' values); a blob count or shape that differs stops, as in Caffe.
    Returns the names of the layers copied."""
    copied = []
    for layer in net.layers:
        blobs = weights.get(layer.name)
        if blobs is None or not layer.params:
            continue
        if len(blobs) != len(layer.params):
            raise DataprepError(
                f"{source}: layer {layer.name} has {len(blobs)} blob(s), the net's {layer.type} takes "
                f"{len(layer.params)}"
            )
        for i, blob in enumerate(blobs):
            want = tuple(layer.params[i].shape)
            if blob.size != int(np.prod(want)) or (blob.ndim > 1 and tuple(blob.shape) != want):
                raise DataprepError(
                    f"{source}: layer {layer.name} blob {i} has shape {tuple(blob.shape)}, "
                    f"the net needs {want}"
                )
            layer.params[i] = net.xp.asarray(blob.reshape(want).astype(layer.params[i].dtype))
        copied.append(layer.name)
    return copied


def caffemodel_bytes(
    net: Net, name: str, entries: list[dict], data_layers: list, only: set[str] | None = None
) -> bytes:
    """The NetParameter of a trained net: its data layers, then every layer (or those
    named in ``only``) with its definition and blobs (what ``caffe train`` snapshots)."""
    return net_message(net, name, entries, data_layers, only).SerializeToString()


def net_message(
    net: Net,
    name: str,
    entries: list[dict],
    data_layers: list,
    only: set[str] | None = None,
    blobs: bool = True,
) -> NetParameter:
    """The net as one NetParameter: ``data_layers`` first, then each layer (or those in
    ``only``) with its blobs, or without them for a prototxt."""
    model = NetParameter(name=name)
    model.layer.extend(data_layers)
    specs = {entry["name"]: entry for entry in entries}
    for node in net.nodes:
        layer = node.layer
        if only is not None and layer.name not in only:
            continue
        message = layer_message(
            {**specs.get(layer.name, {}), "name": layer.name, "type": layer.type}, node.bottoms, node.tops
        )
        if blobs:
            for param in layer.params:
                message.blobs.append(blob_message(host(param)))
        model.layer.append(message)
    return model


def load_snapshot(path: str | Path, needs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of a dataprep ``.npz`` snapshot, read whole (a damaged member fails here,
    not later); DataprepError naming the file for anything else, or one without ``needs``."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        raise DataprepError(f"{path}: not a dataprep snapshot (not a readable .npz)") from None
    missing = [key for key in needs if key not in arrays]
    if missing:
        raise DataprepError(f"{path}: not a dataprep snapshot (no {missing[0]!r})")
    return arrays


def read_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Blobs by layer name from a ``.caffemodel``, Caffe's HDF5 ``.caffemodel.h5`` or a
    dataprep ``.npz`` snapshot."""
    if str(path).endswith((".h5", ".hdf5")):
        return read_caffemodel_h5(path)
    if str(path).endswith(".npz"):
        saved = load_snapshot(path)
        found: dict[str, dict[int, np.ndarray]] = {}
        for key in saved:
            if key.startswith("param/"):
                _, layer, index = key.split("/")
                found.setdefault(layer, {})[int(index)] = saved[key]
        return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in found.items()}
    return read_caffemodel(path)


def data_layers(recipe) -> list:
    """The train net's data layer as Caffe would read the recipe's training source:
    HDF5Data for HDF5, Data for LMDB or LevelDB, Input for a generator or an image list;
    none for a net whose DummyData layers make its inputs (they are in the net)."""
    from ..stores import source_kind
    from ..stores.caffe_pb import LayerParameter

    data = recipe.data
    if data.train is None:
        return []
    layer = LayerParameter(name=data.input, top=[data.input, data.target])
    path = data.train.path
    kind = source_kind(path) if path else None  # a training source: a store or a list of images
    if kind == "hdf5":
        layer.type = "HDF5Data"
        layer.hdf5_data_param.source = path
        layer.hdf5_data_param.batch_size = data.batch_size
    elif kind in ("lmdb", "leveldb"):
        layer.type = "Data"
        layer.data_param.source = path
        layer.data_param.batch_size = data.batch_size
        layer.data_param.backend = 1 if kind == "lmdb" else 0
    else:
        layer.type = "Input"
    return [layer]


def read_caffemodel_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Caffe's HDF5 weights (``snapshot_format: HDF5``, Net::ToHDF5): group ``data``, one
    group per layer, its blobs as datasets ``0``, ``1``, ..."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = f["data"]
            return {
                name: [np.asarray(layers[name][str(k)], np.float32) for k in range(len(layers[name]))]
                for name in layers
            }
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, KeyError) as exc:
        raise DataprepError(f"{path}: not Caffe's HDF5 weights (a data group of layers): {exc}") from None


def caffemodel_h5(net: Net, path: Path) -> None:
    """The net's weights as Caffe's HDF5 snapshot writes them (every layer's blobs, shared
    ones too, under data/LAYER/i)."""
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for layer in net.layers:
            if layer.params:
                group = data.create_group(layer.name)
                for k, param in enumerate(layer.params):
                    group.create_dataset(str(k), data=host(param).astype(np.float32))


def solverstate_h5(path: Path, iteration: int, learned: Path, step: int, history: list) -> None:
    """Caffe's ``.solverstate.h5`` (SGDSolver::SnapshotSolverStateToHDF5): the iteration,
    the weights file, the lr step reached and each parameter's history."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("iter", data=np.int32(iteration))
        f.create_dataset("learned_net", data=np.bytes_(str(learned)))
        f.create_dataset("current_step", data=np.int32(step))
        group = f.create_group("history")
        for k, h in enumerate(history):
            group.create_dataset(str(k), data=host(h).astype(np.float32))


CAFFE_STATES = (".solverstate", ".solverstate.h5")


def is_caffe_state(path: str | Path) -> bool:
    """Whether ``--resume`` names Caffe's own solver state rather than a dataprep snapshot."""
    return str(path).endswith(CAFFE_STATES)


def read_solverstate(path: str | Path) -> tuple[int, Path, list[np.ndarray]]:
    """(iteration, weights file, histories) of Caffe's ``.solverstate`` (SolverState
    binaryproto) or ``.solverstate.h5``; the weights file as Caffe wrote it (relative to
    where Caffe ran), else beside the state."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        if str(path).endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as f:
                iteration, learned = int(f["iter"][()]), f["learned_net"][()]
                learned = learned.decode() if isinstance(learned, bytes) else str(learned)
                group = f["history"]
                history = [np.asarray(group[str(k)], np.float32) for k in range(len(group))]
        else:
            state = SolverState()
            state.ParseFromString(path.read_bytes())
            iteration, learned = state.iter, state.learned_net
            history = [blob_to_array(blob) for blob in state.history]
    except (OSError, KeyError, ValueError, DecodeError) as exc:
        raise DataprepError(f"{path}: not a readable Caffe solver state ({exc})") from None
    weights = Path(learned)
    if not weights.is_file() and (path.parent / weights.name).is_file():
        weights = path.parent / weights.name
    if not weights.is_file():
        raise DataprepError(f"{path}: the weights it names, {learned}, are not there (nor beside it)")
    return iteration, weights, history


def write_caffemodel(path: Path, data: bytes) -> Path:
    with Staging(overwrite=True, after_interrupt=True) as staging:
        staging.path(path).write_bytes(data)
    return path
