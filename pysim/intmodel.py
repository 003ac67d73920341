"""The integer export: an `IntModel` in memory, a JSON manifest plus `.npz` arrays on disk.

The format is described in `pysim/FORMAT.md`. An export is the single input of the golden model,
the hardware compiler and the host firmware. Loading validates everything it can and raises
`ExportError` naming the offending field, so a corrupted or mismatched file never reaches the
arithmetic.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "spikeformer-int"
FORMAT_VERSION = 1

TENSOR_KINDS = ("spike", "uint", "int")
LAYER_KINDS = ("conv", "maxpool", "lif", "ssa", "sdsa", "sew_add", "ms_add", "iand", "head")

# Number of inputs and the arrays each layer kind carries.
_LAYER_INPUTS = {
    "conv": 1, "maxpool": 1, "lif": 1, "ssa": 3, "sdsa": 3,
    "sew_add": 2, "ms_add": 2, "iand": 2, "head": 1,
}
_LAYER_ARRAYS = {
    "conv": ("weight", "bias"), "maxpool": (), "lif": ("threshold",), "ssa": ("threshold",),
    "sdsa": ("threshold",), "sew_add": (), "ms_add": (), "iand": (), "head": ("weight", "bias"),
}


class ExportError(ValueError):
    """An export file or object is malformed; the message names the field."""


@dataclass(frozen=True)
class TensorSpec:
    kind: str  #: "spike", "uint" or "int"
    bits: int  #: 1 for spikes; value range bound for uint (unsigned) and int (signed)
    shape: tuple[int, int, int]  #: (C, H, W)

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def positions(self) -> int:
        return self.shape[1] * self.shape[2]

    def value_range(self) -> tuple[int, int]:
        if self.kind == "spike":
            return 0, 1
        if self.kind == "uint":
            return 0, (1 << self.bits) - 1
        return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    inputs: tuple[str, ...]
    output: str
    #: kernel (conv), heads (ssa), threshold_shift (neurons); plain JSON values.
    params: dict = field(default_factory=dict)
    #: integer arrays: weight, bias, threshold (role -> array).
    arrays: dict = field(default_factory=dict)

    @property
    def has_neuron(self) -> bool:
        return "threshold" in self.arrays

    @property
    def threshold_shift(self) -> int:
        return int(self.params.get("threshold_shift", 0))


@dataclass(frozen=True)
class IntModel:
    model: str
    T: int
    weight_bits: int
    num_classes: int
    input: str
    tensors: dict  #: name -> TensorSpec (the head's output "logits" is not listed)
    layers: tuple  #: Layer objects in execution order
    output: str = "logits"
    #: free-form provenance (seed, accuracy, training epochs); not used by any arithmetic.
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        validate(self)

    @property
    def input_spec(self) -> TensorSpec:
        return self.tensors[self.input]

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def parameter_count(self) -> int:
        return int(sum(layer.arrays[r].size for layer in self.layers
                       for r in ("weight", "bias") if r in layer.arrays))

    # ---- files -----------------------------------------------------------------------------

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write `<stem>.json` and `<stem>.npz`; returns both paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        manifest_layers = []
        for layer in self.layers:
            entry = {"name": layer.name, "kind": layer.kind, "inputs": list(layer.inputs),
                     "output": layer.output}
            entry.update(layer.params)
            neuron = {}
            for role, array in layer.arrays.items():
                key = f"{layer.name}.{role}"
                arrays[key] = array
                if role == "threshold":
                    neuron["threshold"] = key
                else:
                    entry[role] = key
            if neuron:
                neuron["threshold_shift"] = layer.threshold_shift
                entry.pop("threshold_shift", None)
                entry["neuron"] = neuron
            manifest_layers.append(entry)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        blob = buffer.getvalue()
        npz_path = stem.with_suffix(".npz")
        npz_path.write_bytes(blob)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "T": self.T,
            "weight_bits": self.weight_bits,
            "num_classes": self.num_classes,
            "input": self.input,
            "output": self.output,
            "arrays": {"file": npz_path.name, "sha256": hashlib.sha256(blob).hexdigest()},
            "tensors": {name: {"kind": spec.kind, "bits": spec.bits, "shape": list(spec.shape)}
                        for name, spec in self.tensors.items()},
            "layers": manifest_layers,
            "meta": self.meta,
        }
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps(manifest, indent=1) + "\n")
        return json_path, npz_path

    @classmethod
    def load(cls, path: str | Path) -> IntModel:
        """Load `<stem>.json` (and the `.npz` it names); `path` may be the stem or either file."""
        path = Path(path)
        json_path = path if path.suffix == ".json" else path.with_suffix(".json")
        if not json_path.exists():
            raise FileNotFoundError(f"no export manifest at {json_path}")
        try:
            manifest = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ExportError(f"{json_path}: manifest is not valid JSON ({err})") from err
        return cls.from_manifest(manifest, json_path.parent)

    @classmethod
    def from_manifest(cls, manifest: dict, folder: Path) -> IntModel:
        def get(obj, key, where, types=None):
            if not isinstance(obj, dict) or key not in obj:
                raise ExportError(f"manifest field '{where}{key}' is missing")
            value = obj[key]
            if types is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise ExportError(f"manifest field '{where}{key}' has the wrong type "
                                  f"({type(value).__name__})")
            return value

        if get(manifest, "format", "") != FORMAT_NAME:
            raise ExportError(f"manifest field 'format' is {manifest['format']!r}, "
                              f"expected {FORMAT_NAME!r}")
        version = get(manifest, "format_version", "", int)
        if version != FORMAT_VERSION:
            raise ExportError(f"manifest field 'format_version' is {version}; this reader "
                              f"understands version {FORMAT_VERSION} only")
        arrays_info = get(manifest, "arrays", "", dict)
        npz_path = folder / get(arrays_info, "file", "arrays.", str)
        if not npz_path.exists():
            raise ExportError(f"manifest field 'arrays.file': {npz_path} does not exist")
        blob = npz_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != get(arrays_info, "sha256", "arrays.", str):
            raise ExportError(f"manifest field 'arrays.sha256' does not match {npz_path.name}: "
                              "the arrays file is corrupted or belongs to another export")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                store = {key: npz[key] for key in npz.files}
        except Exception as err:  # numpy raises several types for a damaged archive
            raise ExportError(f"manifest field 'arrays.file': cannot read {npz_path.name} "
                              f"({err})") from err

        tensors = {}
        for name, spec in get(manifest, "tensors", "", dict).items():
            where = f"tensors.{name}."
            shape = get(spec, "shape", where, list)
            if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
                raise ExportError(f"manifest field '{where}shape' must be three positive "
                                  f"integers (C, H, W), got {shape}")
            tensors[name] = TensorSpec(get(spec, "kind", where, str),
                                       get(spec, "bits", where, int), tuple(shape))
        layers = []
        for index, entry in enumerate(get(manifest, "layers", "", list)):
            where = f"layers[{index}]."
            name = get(entry, "name", where, str)
            where = f"layers[{index}]({name})."
            kind = get(entry, "kind", where, str)
            if kind not in LAYER_KINDS:
                raise ExportError(f"manifest field '{where}kind' is {kind!r}; known kinds: "
                                  f"{', '.join(LAYER_KINDS)}")
            arrays = {}
            params = {}
            for role in _LAYER_ARRAYS[kind]:
                if role == "threshold":
                    neuron = get(entry, "neuron", where, dict)
                    key = get(neuron, "threshold", where + "neuron.", str)
                    params["threshold_shift"] = get(neuron, "threshold_shift",
                                                    where + "neuron.", int)
                else:
                    key = get(entry, role, where, str)
                if key not in store:
                    raise ExportError(f"manifest field '{where}{role}' names array {key!r}, "
                                      f"which is not in {npz_path.name}")
                arrays[role] = store[key]
            if kind == "conv" and entry.get("neuron") is not None:
                neuron = get(entry, "neuron", where, dict)
                key = get(neuron, "threshold", where + "neuron.", str)
                if key not in store:
                    raise ExportError(f"manifest field '{where}neuron.threshold' names array "
                                      f"{key!r}, which is not in {npz_path.name}")
                arrays["threshold"] = store[key]
                params["threshold_shift"] = get(neuron, "threshold_shift", where + "neuron.", int)
            for key in ("kernel", "heads"):
                if key in entry:
                    params[key] = get(entry, key, where, int)
            inputs = get(entry, "inputs", where, list)
            layers.append(Layer(name, kind, tuple(inputs), get(entry, "output", where, str),
                                params, arrays))
        return cls(
            model=get(manifest, "model", "", str),
            T=get(manifest, "T", "", int),
            weight_bits=get(manifest, "weight_bits", "", int),
            num_classes=get(manifest, "num_classes", "", int),
            input=get(manifest, "input", "", str),
            output=get(manifest, "output", "", str),
            tensors=tensors,
            layers=tuple(layers),
            meta=manifest.get("meta", {}),
        )


def _check_array(array, where: str, shape: tuple, lo: int, hi: int):
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.integer):
        raise ExportError(f"{where} must be an integer array, got "
                          f"{getattr(array, 'dtype', type(array).__name__)}")
    if array.shape != shape:
        raise ExportError(f"{where} has shape {array.shape}, expected {shape}")
    if array.size and (array.min() < lo or array.max() > hi):
        raise ExportError(f"{where} has values in [{array.min()}, {array.max()}], "
                          f"outside [{lo}, {hi}]")


def validate(model: IntModel) -> None:
    """Check that names resolve, shapes chain and arrays fit their declared ranges."""
    if not 1 <= model.T <= 64:
        raise ExportError(f"field 'T' is {model.T}, expected 1 .. 64")
    if not 2 <= model.weight_bits <= 16:
        raise ExportError(f"field 'weight_bits' is {model.weight_bits}, expected 2 .. 16")
    if model.num_classes < 1:
        raise ExportError(f"field 'num_classes' is {model.num_classes}, expected >= 1")
    for name, spec in model.tensors.items():
        if spec.kind not in TENSOR_KINDS:
            raise ExportError(f"field 'tensors.{name}.kind' is {spec.kind!r}, expected one of "
                              f"{', '.join(TENSOR_KINDS)}")
        if spec.bits < 1 or (spec.kind == "spike" and spec.bits != 1) or spec.bits > 32:
            raise ExportError(f"field 'tensors.{name}.bits' is {spec.bits}, not valid for a "
                              f"{spec.kind} tensor")
    if model.input not in model.tensors:
        raise ExportError(f"field 'input' names tensor {model.input!r}, which is not in "
                          "'tensors'")
    if model.input_spec.kind != "uint":
        raise ExportError(f"field 'tensors.{model.input}.kind' must be 'uint' (pixels)")
    qmax = (1 << (model.weight_bits - 1)) - 1
    ready = {model.input}
    names = set()
    for index, layer in enumerate(model.layers):
        where = f"field 'layers[{index}]({layer.name})"
        if layer.name in names:
            raise ExportError(f"{where}.name' repeats an earlier layer name")
        names.add(layer.name)
        if len(layer.inputs) != _LAYER_INPUTS[layer.kind]:
            raise ExportError(f"{where}.inputs' has {len(layer.inputs)} tensors; a "
                              f"{layer.kind} layer takes {_LAYER_INPUTS[layer.kind]}")
        for name in layer.inputs:
            if name not in model.tensors:
                raise ExportError(f"{where}.inputs' names tensor {name!r}, which is not in "
                                  "'tensors'")
            if name not in ready:
                raise ExportError(f"{where}.inputs' reads tensor {name!r} before any layer "
                                  "writes it")
        is_head = layer.kind == "head"
        if is_head:
            if layer.output != model.output or index != len(model.layers) - 1:
                raise ExportError(f"{where}' a head must be the last layer and write "
                                  f"{model.output!r}")
        elif layer.output not in model.tensors:
            raise ExportError(f"{where}.output' names tensor {layer.output!r}, which is not "
                              "in 'tensors'")
        elif layer.output in ready:
            raise ExportError(f"{where}.output' writes tensor {layer.output!r} a second time")
        ins = [model.tensors[n] for n in layer.inputs]
        out = None if is_head else model.tensors[layer.output]
        _validate_layer(layer, ins, out, model, qmax, where)
        ready.add(layer.output)
    if not model.layers or model.layers[-1].kind != "head":
        raise ExportError("field 'layers' must end with a head layer")


def _validate_layer(layer: Layer, ins, out, model: IntModel, qmax: int, where: str):
    x = ins[0]

    def need(cond, what):
        if not cond:
            raise ExportError(f"{where}' {what}")

    def threshold(channels):
        _check_array(layer.arrays["threshold"], f"{where}.neuron.threshold'", (channels,),
                     1, 2**31 - 1)
        need(0 <= layer.threshold_shift <= 16, "neuron.threshold_shift must be 0 .. 16")

    if layer.kind == "conv":
        k = layer.params.get("kernel")
        need(k in (1, 3), f"kernel must be 1 or 3, got {k}")
        need(x.kind in ("spike", "uint"), f"reads a {x.kind} tensor; conv inputs are spikes or "
             "unsigned integers")
        cout = out.shape[0]
        need(out.shape[1:] == x.shape[1:], f"output grid {out.shape[1:]} differs from input "
             f"grid {x.shape[1:]}")
        _check_array(layer.arrays["weight"], f"{where}.weight'", (cout, x.shape[0], k, k),
                     -qmax, qmax)
        _check_array(layer.arrays["bias"], f"{where}.bias'", (cout,), -(2**31), 2**31 - 1)
        if layer.has_neuron:
            threshold(cout)
            need(out.kind == "spike", "has a neuron, so its output must be a spike tensor")
        else:
            need(out.kind == "int", "has no neuron, so its output must be an int tensor")
    elif layer.kind == "maxpool":
        need(x.kind == "spike", "max-pool reads spikes")
        expect = (x.shape[0], (x.shape[1] + 1) // 2, (x.shape[2] + 1) // 2)
        need(out.shape == expect and out.kind == "spike",
             f"output must be a spike tensor of shape {expect}")
    elif layer.kind == "lif":
        need(x.kind in ("int", "uint"), "a lif layer reads an integer tensor")
        need(out.kind == "spike" and out.shape == x.shape, "output must be spikes of the "
             "input's shape")
        threshold(x.shape[0])
    elif layer.kind in ("ssa", "sdsa"):
        need(all(t.kind == "spike" and t.shape == x.shape for t in ins),
             "q, k and v must be spike tensors of one shape")
        need(out.kind == "spike" and out.shape == x.shape, "output must be spikes of q's shape")
        threshold(x.shape[0])
        if layer.kind == "ssa":
            heads = layer.params.get("heads")
            need(isinstance(heads, int) and heads >= 1 and x.shape[0] % heads == 0,
                 f"heads must divide the {x.shape[0]} channels, got {heads}")
    elif layer.kind in ("sew_add", "ms_add", "iand"):
        need(ins[0].shape == ins[1].shape == out.shape, "inputs and output must have one shape")
        if layer.kind == "iand":
            need(all(t.kind == "spike" for t in ins) and out.kind == "spike",
                 "IAND reads and writes spikes")
        elif layer.kind == "sew_add":
            need(all(t.kind in ("spike", "uint") for t in ins) and out.kind == "uint",
                 "SEW add reads spikes or unsigned integers and writes an unsigned tensor")
        else:
            need(all(t.kind == "int" for t in ins) and out.kind == "int",
                 "a membrane shortcut adds two int tensors into an int tensor")
    elif layer.kind == "head":
        need(x.kind in ("spike", "uint"), "the head reads spikes or unsigned integers")
        _check_array(layer.arrays["weight"], f"{where}.weight'",
                     (model.num_classes, x.shape[0]), -qmax, qmax)
        _check_array(layer.arrays["bias"], f"{where}.bias'", (model.num_classes,),
                     -(2**31), 2**31 - 1)
