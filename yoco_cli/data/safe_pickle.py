"""Read the reference's pickles (dynamics `td-*.pickle`, `data-score-*.pickle`) without running code.

A pickle names the functions it calls to rebuild objects; we allow only the handful that
rebuild torch tensors, numpy arrays and plain containers, each replaced by our own checked
version. Anything else (os.system, builtins.eval, arbitrary classes) is refused with exit 3.

Tensors. A plain pickle stores each tensor as `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, ...)` and each storage as `torch.storage._load_from_bytes(b)`, where `b` is a
whole legacy `torch.save` stream (five small pickles, then the raw little-endian elements).
torch would call an unrestricted `torch.load` on every one of them (a td pickle of CIFAR-100
IPC 10 holds 126,000); we parse the stream ourselves with a restricted unpickler that knows
only the storage classes (~8 us a storage instead of ~190 us through `torch.load(weights_only=
True)`). `load(lazy_tensors=True)` leaves the tensors as `StoredTensor`s over the bytes already
in memory, so a bulk reader can join thousands of them with one copy (see stages/dynamics.py).

Memory. Sizes declared in the file are checked before anything is allocated: a storage must
hold exactly the elements it declares, a tensor must lie inside its storage, a numpy array's
data must match its shape, views that repeat elements (stride 0) may not declare more bytes
than the file holds (YOCO_MAX_MEMORY raises that), and no read asks for more than the file's
remaining bytes. A violation is an integrity error (exit 3), never a MemoryError.
"""
from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any

from .. import limits
from ..errors import IntegrityError, UsageError
from ..files import BoundedReader

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
# storage class -> (torch dtype name, bytes per element)
_STORAGES = {
    "HalfStorage": ("float16", 2), "FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1),
    "BoolStorage": ("bool", 1), "UntypedStorage": ("uint8", 1),
}


class _Bad(Exception):
    """A structural problem found while parsing; becomes an IntegrityError naming the file."""


class _Storage:
    """One storage, parsed and checked; its elements still lie in the pickle's byte string."""

    __slots__ = ("_flat", "blob", "dtype", "itemsize", "numel", "start")

    def __init__(self, blob, start: int, numel: int, dtype, itemsize: int):
        self.blob, self.start, self.numel, self.dtype, self.itemsize = blob, start, numel, dtype, itemsize
        self._flat = None

    def data(self) -> memoryview:
        return memoryview(self.blob)[self.start:]

    def flat(self):
        """The elements as a 1-D tensor (a private copy, so it is safe to write to)."""
        if self._flat is None:
            import torch

            self._flat = (torch.frombuffer(bytearray(self.data()), dtype=self.dtype) if self.numel
                          else torch.empty(0, dtype=self.dtype))
        return self._flat


class StoredTensor:
    """A tensor as the pickle declares it, checked against its storage but not built yet.

    Bulk readers join the bytes of many dense ones into one tensor (`join`) instead of building
    thousands of small tensors; `build()` makes the tensor itself.
    """

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    @property
    def dtype(self):
        return self.storage.dtype

    @property
    def dense(self) -> bool:
        """Row-major over its whole storage (how torch pickles a fresh tensor): its bytes are the storage's."""
        if self.offset != 0 or math.prod(self.size) != self.storage.numel:
            return False
        expect = 1
        for n, st in zip(reversed(self.size), reversed(self.stride)):
            if n != 1 and st != expect:
                return False
            expect *= n
        return True

    def build(self):
        return self.storage.flat().as_strided(self.size, self.stride, self.offset)


def join(parts: list[StoredTensor]):
    """One 1-D tensor of the elements of dense tensors of one dtype, in order (one copy of their bytes)."""
    import torch

    buf = bytearray().join(t.storage.data() for t in parts)
    return torch.frombuffer(buf, dtype=parts[0].dtype) if buf else torch.empty(0, dtype=parts[0].dtype)


class _StorageUnpickler(pickle.Unpickler):
    """The pickles inside one legacy storage stream: ints, a dict, a persistent id naming a storage class."""

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        raise _Bad(f"its tensor data names {module}.{name}, not a storage class")

    def persistent_load(self, pid):
        return pid


class _StorageParser:
    """Legacy `torch.save(storage)` streams -> _Storage, checking every declared size against the bytes.

    The first three pickles of a stream (magic number, format version, the writer's type sizes)
    are the same bytes in every storage of a file: once one stream's are read and checked, later
    streams that start with the same bytes skip them.
    """

    def __init__(self):
        import torch

        self.dtypes = {name: getattr(torch, name) for name, _ in _STORAGES.values()}
        self.preamble = b""

    def __call__(self, blob) -> _Storage:
        if not isinstance(blob, (bytes, bytearray)):
            raise _Bad("its tensor data is not a byte string")
        f = io.BytesIO(blob)
        u = _StorageUnpickler(f)
        if not (self.preamble and blob.startswith(self.preamble)):
            self._check_preamble(u)
            self.preamble = bytes(blob[:f.tell()])
        else:
            f.seek(len(self.preamble))
        pid, keys = u.load(), u.load()
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], tuple)
                and isinstance(pid[4], int) and (len(pid) == 5 or pid[5] is None) and keys == [pid[2]]):
            raise _Bad("its tensor data declares a storage yoco cannot read")
        (dtype, itemsize), numel = pid[1], pid[4]
        start = f.tell() + 8
        if numel < 0 or len(blob) < start or int.from_bytes(blob[start - 8:start], "little") != numel:
            raise _Bad(f"a storage declares {numel} elements inconsistently")
        if len(blob) - start != numel * itemsize:  # checked before any use: the data must all be there
            raise _Bad(f"a storage declares {numel} elements of {itemsize} bytes but holds {len(blob) - start} bytes")
        return _Storage(blob, start, numel, self.dtypes[dtype], itemsize)

    @staticmethod
    def _check_preamble(u) -> None:
        if u.load() != _LEGACY_MAGIC or u.load() != _LEGACY_PROTOCOL:
            raise _Bad("its tensor data is not a torch storage stream")
        if not isinstance(u.load(), dict):  # the writer's type sizes (the data itself is always little-endian)
            raise _Bad("its tensor data lacks the writer's description")


def _int_tuple(v, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(isinstance(x, int) and x >= 0 for x in v):
        raise _Bad(f"a tensor's {what} is not a tuple of non-negative integers")
    return tuple(v)


class _Reader:
    """State of one load: the file size (for the bounds on repeated views) and the options."""

    def __init__(self, file_size: int, lazy: bool):
        self.lazy = lazy
        self.storage = _StorageParser()
        explicit = limits.explicit_limit()
        self.expand_budget = max(file_size, explicit or 0)
        self.expanded = 0

    def tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None, *rest):
        if not isinstance(storage, _Storage):
            raise _Bad("a tensor's storage is not tensor data")
        if not isinstance(offset, int) or offset < 0:
            raise _Bad("a tensor's storage offset is not a non-negative integer")
        size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        if len(size) != len(stride) or (hooks is not None and len(hooks)) or rest:
            raise _Bad("a tensor is declared in a form yoco does not read")
        numel = math.prod(size)
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise _Bad(f"a tensor of shape {size} reaches element {last} of a storage of {storage.numel}")
            nbytes = numel * storage.itemsize
            if nbytes > storage.numel * storage.itemsize:  # a view repeating elements (stride 0)
                self.expanded += nbytes
                if self.expanded > self.expand_budget:
                    raise _Bad(f"a tensor of shape {size} repeats its stored elements to "
                               f"{limits.human(nbytes)}, more than the file holds")
        t = StoredTensor(storage, offset, size, stride)
        return t if self.lazy else t.build()

    def tensor_v1(self, storage, offset, size, stride):
        return self.tensor(storage, offset, size, stride)


def _checked_array_class():
    import numpy as np

    class CheckedArray(np.ndarray):
        """An ndarray whose pickled state is checked against its shape before numpy allocates it."""

        def __setstate__(self, state):
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise _Bad("an array's state is malformed")
            shape, dtype, data = state[-4], state[-3], state[-1]
            shape = _int_tuple(shape, "shape")
            if not isinstance(dtype, np.dtype):
                raise _Bad("an array's dtype is malformed")
            n = math.prod(shape)
            if dtype.hasobject:
                if dtype != np.dtype(object) or not isinstance(data, list) or len(data) != n:
                    raise _Bad(f"an object array of shape {shape} holds {len(data) if isinstance(data, list) else 0} items")
            elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
                raise _Bad(f"an array of shape {shape} and {dtype} holds "
                           f"{len(data) if isinstance(data, (bytes, bytearray)) else 0} bytes")
            super().__setstate__(state)

    return CheckedArray


def _allowed(reader: _Reader) -> dict[tuple[str, str], Any]:
    import collections

    import numpy as np
    import torch

    checked = _checked_array_class()

    def reconstruct(subtype, shape, dtype):
        # numpy pickles an empty (0,) array here and fills it in __setstate__ (checked above)
        if subtype is not np.ndarray or _int_tuple(shape, "shape") != (0,):
            raise _Bad("an array is declared in a form yoco does not read")
        return np.ndarray.__new__(checked, (0,), "b")

    def scalar(dtype, data=None):
        if not isinstance(dtype, np.dtype):
            raise _Bad("a numpy scalar's dtype is malformed")
        if dtype.hasobject:
            return data
        if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
            raise _Bad("a numpy scalar's data does not match its dtype")
        return np.frombuffer(data, dtype)[0]

    def frombuffer(buf, dtype, shape, order):  # numpy's protocol-5 form
        shape = _int_tuple(shape, "shape")
        if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
            raise _Bad("an array is declared in a form yoco does not read")
        if not isinstance(buf, (bytes, bytearray)) or len(buf) != math.prod(shape) * dtype.itemsize:
            raise _Bad(f"an array of shape {shape} and {dtype} does not hold its data")
        arr = np.frombuffer(buf, dtype).reshape(shape, order=order)
        return arr.copy(order="K")

    def encode(text, encoding="utf-8"):  # how protocol-2 pickles spell byte strings
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Bad("a byte string is encoded in a form yoco does not read")
        return text.encode("latin1")

    allow: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): reader.tensor,
        ("torch._utils", "_rebuild_tensor"): reader.tensor_v1,
        ("torch.storage", "_load_from_bytes"): reader.storage,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): torch.Size,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allow[(mod, "_reconstruct")] = reconstruct
        allow[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allow[(mod, "_frombuffer")] = frombuffer
    for name in ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"):
        allow[("torch", name)] = getattr(torch, name)
    return allow


class _Restricted(pickle.Unpickler):
    def __init__(self, f, allow):
        super().__init__(f)
        self._allow = allow

    def find_class(self, module: str, name: str):
        try:
            return self._allow[(module, name)]
        except KeyError:
            raise IntegrityError(
                f"the pickle wants to call {module}.{name}, which yoco refuses to run",
                "only tensors, arrays and plain containers are read from reference pickles",
            ) from None


def _leaf_bytes(v) -> int:
    if isinstance(v, (str, bytes, bytearray)):
        return len(v) + 8
    if isinstance(v, StoredTensor):
        return math.prod(v.size) * v.storage.itemsize
    nbytes = getattr(v, "nbytes", None)  # numpy arrays and scalars, torch tensors
    return int(nbytes) if isinstance(nbytes, int) else 8


def check_expansion(obj, what: str) -> None:
    """Refuse (exit 3) an unpickled object whose shared nested lists expand past YOCO_MAX_MEMORY (for the
    other pickle readers: CIFAR members)."""
    try:
        _check_expansion(obj, limits.memory_limit())
    except _Bad as e:
        raise IntegrityError(f"{what}: {e}", "the file is damaged or hostile") from None


SHARING = 16  # how many times its distinct contents an object may expand to through shared references


def _check_expansion(root, limit: int) -> None:
    """A pickle's memo lets a 26 KB file refer to one list from many places, and those lists to others:
    harmless as references, but 7.45 GiB once a reader turns the nesting into an array. Count what the
    object expands to, each shared container as often as it is referred to (memoised per container, so
    this costs one visit each), and refuse it when that is above the memory limit and the sharing, not
    the file's own contents, makes it so (more than SHARING times what the distinct containers hold). A
    plain file over the limit is left to the reader's own allocation check, which names what it needs."""
    sizes: dict[int, int] = {}
    distinct = 0  # each container once, as a plain (unshared) object would hold it
    started: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, finished = stack.pop()
        if not isinstance(obj, (list, tuple, dict)):
            continue
        oid = id(obj)
        items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        if finished:
            own = 8 * len(items) + sum(_leaf_bytes(c) for c in items if not isinstance(c, (list, tuple, dict)))
            distinct += own
            sizes[oid] = own + sum(sizes[id(c)] for c in items if isinstance(c, (list, tuple, dict)))
            started.discard(oid)
            if sizes[oid] > limit and sizes[oid] > SHARING * distinct:
                raise _Bad(f"its lists and arrays expand to more than {limits.human(limit)} when read "
                           f"(shared references nested {len(started) + 1} deep), above the memory limit "
                           f"({limits.ENV})")
            continue
        if oid in sizes:
            continue
        if oid in started:  # everything started and not finished is an ancestor of this item
            raise _Bad("a list or dict contains itself")
        started.add(oid)
        stack.append((obj, True))
        stack.extend((c, False) for c in items if isinstance(c, (list, tuple, dict)) and id(c) not in sizes)


def load(path: Path | str, *, lazy_tensors: bool = False) -> Any:
    """The pickle's object, with tensors and arrays rebuilt by the checked functions above.

    lazy_tensors=True leaves every torch tensor as a `StoredTensor` over the file's bytes (for
    readers that join thousands of them; see `join`).
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p} does not exist")
    if p.is_dir():
        raise UsageError(f"{p} is a directory, not a pickle file")
    import warnings

    size = p.stat().st_size
    reader = _Reader(size, lazy_tensors)
    with open(p, "rb") as raw, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core deprecation shims
        try:
            obj = _Restricted(BoundedReader(raw, size), _allowed(reader)).load()
            _check_expansion(obj, limits.memory_limit())
            return obj
        except IntegrityError:
            raise
        except _Bad as e:
            raise IntegrityError(f"{p}: {e}", "the file is damaged or was not written by torch/numpy") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, RuntimeError, OverflowError) as e:
            raise IntegrityError(f"{p} is not a readable pickle ({type(e).__name__}: {e})") from None
        except MemoryError:  # pickle allocates a byte string's declared length before reading it
            raise IntegrityError(f"{p}: reading it ran out of memory: a length field asks for more than the machine "
                                 f"has, in a file of {limits.human(size)}",
                                 "the file is damaged or was not written by torch/numpy") from None
