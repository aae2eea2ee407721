"""The reference's pickles as stages read them: through the restricted unpickler, failing in one line."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import IntegrityError


def load_reference_pickle(path: Path):
    """A reference pickle through the restricted unpickler. A file whose declared sizes ask for more
    memory than exists (a 15 KB file declaring a 7 GiB buffer) is a damaged or hostile file: exit 3
    with one line, never an internal MemoryError."""
    from ..data import safe_pickle

    try:
        return safe_pickle.load(path)
    except MemoryError:
        raise IntegrityError(f"{path} declares more data than memory can hold "
                             f"({os.path.getsize(path)} bytes on disk)", "it is damaged or not a reference pickle") from None
    except RuntimeError as e:  # torch's allocator: "DefaultCPUAllocator: can't allocate memory"
        if "allocat" not in str(e).lower():
            raise
        raise IntegrityError(f"{path} declares a tensor larger than memory can hold "
                             f"({os.path.getsize(path)} bytes on disk)", "it is damaged or not a reference pickle") from None
