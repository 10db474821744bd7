"""Save and load fitted estimators without pickle: safetensors for the tensors, JSON for the rest.

``pickle`` and ``joblib`` work for every estimator, but loading a pickle runs whatever code the file
names, so a model file from a stranger is a program from a stranger. ``save`` writes one
``.safetensors`` file: every tensor and numeric array in the safetensors format (raw bytes with a
shape and a dtype) and everything else (hyperparameters, labels, counters, the structure of the
fitted state) as JSON in the file's metadata. ``load`` rebuilds the estimator from that description
and can only create the classes registered with this module (every estimator class, registered
when it is defined, and the helper classes their fitted state holds), numpy arrays and torch
tensors: a file cannot make it import a module or run anything else.

Examples
--------
>>> import numpy as np, os, tempfile
>>> from sksemiparam import SemiparametricClassifier
>>> from sksemiparam.persistence import load, save
>>> X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
>>> clf = SemiparametricClassifier(max_epochs=2, random_state=0).fit(X, y)
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
>>> save(clf, path)
>>> bool((load(path).predict_proba(X) == clf.predict_proba(X)).all())
True
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "sksemiparam-safetensors"
FORMAT_VERSION = 1

# The only classes a file may ask ``load`` to create, by (module path, class name): every estimator
# class (registered by ``TorchEstimatorBase.__init_subclass__``) and the helper classes their fitted
# state holds (registered where they are defined, with ``register``).
_REGISTRY: dict[tuple[str, str], type] = {}


def register(cls: type) -> type:
    """Let ``load`` create instances of ``cls`` (usable as a class decorator).

    Estimators need not call it: subclassing ``TorchEstimatorBase`` registers them. A helper object
    held in an estimator's fitted state (an index, a memory, a quantizer) is registered where its
    class is defined. Only classes registered in this process can be created, so a file cannot make
    ``load`` import a module.
    """
    _REGISTRY[(cls.__module__, cls.__name__)] = cls
    return cls


def _registered(cls: type) -> bool:
    return _REGISTRY.get((cls.__module__, cls.__name__)) is cls


def save(estimator, path) -> None:
    """Write a fitted (or unfitted) sksemiparam estimator to ``path`` without pickle.

    Parameters
    ----------
    estimator : a sksemiparam estimator
    path : str or path-like
        Conventionally ending in ``.safetensors``.

    Raises
    ------
    TypeError
        If the estimator is not one of the library's, or holds something this format cannot
        describe (for example a callable ``embedding`` factory: use pickle or joblib for models
        built from your own code).
    """
    from safetensors.torch import save_file

    from . import __version__

    cls = type(estimator)
    if not _registered(cls) or not hasattr(cls, "_build_module"):
        raise TypeError(f"save() stores sksemiparam estimators; got {cls.__module__}.{cls.__name__}")
    store = _TensorStore()
    state = estimator.__getstate__()
    module = state.pop("module_", None)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sksemiparam_version": __version__,
        "class": [cls.__module__, cls.__name__],
        "state": _encode(state, store, "state"),
        "module": None if module is None else _encode(module.state_dict(), store, "module"),
    }
    save_file(store.tensors, str(path), metadata={"sksemiparam": json.dumps(header, allow_nan=False)})


def load(path):
    """Read an estimator written by ``save``. Safe for files from untrusted sources.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    estimator

    Raises
    ------
    ValueError
        If the file is not in this format, names a class outside the library's estimators, or was
        written by a newer sksemiparam than the one installed.
    """
    from safetensors import safe_open

    from . import __version__

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if "sksemiparam" not in metadata:
            raise ValueError(f"{path} is not an sksemiparam model file (no 'sksemiparam' metadata)")
        header = json.loads(metadata["sksemiparam"])
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an sksemiparam model file (format {header.get('format')!r})")
    _check_not_newer(header.get("sksemiparam_version", "0"), __version__, str(path))
    if header["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model-file format {header['format_version']}; this sksemiparam reads up to "
            f"{FORMAT_VERSION}: upgrade sksemiparam"
        )
    cls = _allowed_class(*header["class"])
    state = _decode(header["state"], tensors)
    estimator = cls.__new__(cls)
    estimator.__setstate__(state)
    if header["module"] is not None:
        estimator.module_ = _rebuild_module(estimator, _decode(header["module"], tensors))
    return estimator


def _check_not_newer(saved: str, installed: str, what: str) -> None:
    from sklearn.utils.fixes import parse_version

    if parse_version(saved) > parse_version(installed):
        raise ValueError(
            f"{what} was saved by sksemiparam {saved}, newer than the installed {installed}; "
            f"upgrade sksemiparam (pip install -U sksemiparam) to load it"
        )


def _allowed_class(module_name: str, name: str):
    cls = _REGISTRY.get((module_name, name))
    if cls is None:
        raise ValueError(
            f"refusing to create {module_name}.{name}: not an sksemiparam class (an estimator, or a "
            "helper class registered with sksemiparam.persistence.register; an estimator defined in "
            "your own module is known once that module is imported)"
        )
    return cls


def _rebuild_module(estimator, state_dict: dict) -> nn.Module:
    """The estimator's network, built as ``fit`` builds it, with the saved weights in place."""
    # _build_module resets fitted attributes and may draw from the estimator's generator: build on
    # a shallow copy with a generator of its own, and leave the global RNG alone.
    scratch = copy.copy(estimator)
    scratch._generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        module = scratch._build_module(estimator.n_features_in_, estimator._n_outputs)
    # Per-example parameters grow with partial_fit: give each the saved shape before loading.
    for name, value in state_dict.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if attr in owner._parameters and owner._parameters[attr] is not None:
            old = owner._parameters[attr]
            if old.shape != value.shape:
                owner._parameters[attr] = nn.Parameter(torch.empty_like(value), old.requires_grad)
        elif attr in owner._buffers and owner._buffers[attr] is not None:
            if owner._buffers[attr].shape != value.shape:
                owner._buffers[attr] = torch.empty_like(value)
    module.load_state_dict(state_dict)
    return module.to(estimator.device_).eval()


# ------------------------------------------------------------------------ JSON + tensors encoding
def _encode(obj: Any, store: _TensorStore, path: str) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int) and not isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": store.add(obj, path), "parameter": isinstance(obj, nn.Parameter)}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            return {"__ndarray__": store.add(torch.from_numpy(np.ascontiguousarray(obj)), path)}
        if obj.dtype.kind in "UO" and all(isinstance(v, (str, int, float)) for v in obj.ravel()):
            return {"__ndarray_list__": obj.tolist(), "dtype": obj.dtype.str, "shape": list(obj.shape)}
        raise TypeError(f"cannot store the array at {path} (dtype {obj.dtype}) without pickle")
    if isinstance(obj, np.generic):
        return {"__npscalar__": _encode(obj.item(), store, path), "dtype": obj.dtype.str}
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        kind = {list: "__list__", tuple: "__tuple__", set: "__set__", frozenset: "__set__"}[type(obj)]
        items = sorted(obj) if isinstance(obj, (set, frozenset)) else obj
        return {kind: [_encode(v, store, f"{path}[{i}]") for i, v in enumerate(items)]}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [_encode(k, store, f"{path}.key"), _encode(v, store, f"{path}.{k}")] for k, v in obj.items()
            ]
        }
    cls = type(obj)
    if _registered(cls):
        state = obj.__getstate__() if hasattr(obj, "__getstate__") else vars(obj)
        return {"__object__": [cls.__module__, cls.__name__], "state": _encode(state, store, path)}
    if callable(obj):
        raise TypeError(
            f"cannot store {path} = {obj!r} without pickle (a callable, e.g. your own `embedding` "
            "factory): use pickle or joblib for models built from your own code"
        )
    raise TypeError(f"cannot store {path} of type {cls.__module__}.{cls.__name__} without pickle")


class _TensorStore:
    """The tensors of a file being written, each under one key.

    One tensor object referenced twice (e.g. a memory's keys and the index over them) is stored
    once and comes back as one object; a different tensor sharing its storage (a view) is stored
    as a copy, as safetensors holds no views.
    """

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self._keys: dict[int, tuple[str, torch.Tensor]] = {}  # holding the tensor keeps its id unique
        self._storages: set[int] = set()

    def add(self, t: torch.Tensor, path: str) -> str:
        if id(t) in self._keys:
            return self._keys[id(t)][0]
        key = f"{path}#{len(self._keys)}"
        data = t.detach().cpu()
        if data.untyped_storage().data_ptr() in self._storages or not data.is_contiguous():
            data = data.clone()
        self._storages.add(data.untyped_storage().data_ptr())
        self.tensors[key] = data
        self._keys[id(t)] = (key, t)
        return key


def _decode(obj: Any, tensors: dict) -> Any:
    if not isinstance(obj, (dict, list)):
        return obj
    if isinstance(obj, list):  # not produced by _encode, refuse rather than guess
        raise ValueError("malformed sksemiparam model file: bare list")
    ((tag, value), *rest) = obj.items()
    if tag == "__tensor__":
        if obj.get("parameter"):
            return nn.Parameter(tensors[value], requires_grad=True)
        return tensors[value]  # the same key gives the same object
    if tag == "__ndarray__":
        return tensors[value].numpy()
    if tag == "__ndarray_list__":
        return np.array(value, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if tag == "__npscalar__":
        return np.dtype(obj["dtype"]).type(value)
    if tag == "__float__":
        return float(value)
    if tag == "__device__":
        return torch.device(value)
    if tag == "__dtype__":
        dtype = getattr(torch, value, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"malformed sksemiparam model file: unknown dtype {value!r}")
        return dtype
    if tag == "__bytes__":
        return bytes.fromhex(value)
    if tag == "__list__":
        return [_decode(v, tensors) for v in value]
    if tag == "__tuple__":
        return tuple(_decode(v, tensors) for v in value)
    if tag == "__set__":
        return {_decode(v, tensors) for v in value}
    if tag == "__dict__":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value}
    if tag == "__object__":
        cls = _allowed_class(*value)
        instance = cls.__new__(cls)
        state = _decode(obj["state"], tensors)
        if hasattr(instance, "__setstate__"):
            instance.__setstate__(state)
        else:
            instance.__dict__.update(state)
        return instance
    raise ValueError(f"malformed sksemiparam model file: unknown tag {tag!r}")
