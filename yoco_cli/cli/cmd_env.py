"""`yoco env`: what this yoco runs on, in one screen to paste into a bug report.

The version of yoco, Python and torch (and torch's build: CUDA, MPS or CPU only), the devices and the
thread policy, the cache folder and any shared stores with their sizes, the environment variables yoco
reads (those set, with their values), and which optional extras are installed. Nothing is written.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import typer

from .._version import __version__
from . import output
from .common import JsonOpt, set_json, state

# Every environment variable yoco (or a library it drives for it) reads, and what for.
VARIABLES = {
    "YOCO_HOME": "the cache folder",
    "YOCO_SHARED": "read-only stores under the cache (os.pathsep-separated)",
    "YOCO_THREADS": "torch threads (N or auto)",
    "OMP_NUM_THREADS": "torch threads when YOCO_THREADS is unset",
    "OMP_WAIT_POLICY": "OpenMP's waiting (yoco asks for PASSIVE unless set)",
    "YOCO_EXECUTOR": "where training runs go (auto, serial, local, ray)",
    "YOCO_RAY_ADDRESS": "the Ray cluster to join",
    "YOCO_OFFLINE": "never use the network",
    "YOCO_REGISTRY": "an extra registry file of downloads",
    "YOCO_GDRIVE_MIRROR": "a mirror for Google Drive downloads",
    "YOCO_IMAGENET_DIR": "a local ImageNet folder",
    "YOCO_MAX_MEMORY": "the memory a declared size may claim",
    "YOCO_MAX_DECODED_BYTES": "the decoded size an image file may claim",
    "YOCO_LOCK_TIMEOUT": "seconds to wait for a store lock",
    "YOCO_NO_COMPILE": "never torch.compile",
    "YOCO_NO_MALLOPT": "leave glibc malloc's settings alone",
    "YOCO_DEBUG": "tracebacks for errors",
    "HF_HOME": "the Hugging Face cache (hf: fetches)",
    "HF_HUB_CACHE": "the Hugging Face Hub cache",
    "HF_ENDPOINT": "the Hugging Face Hub's address",
    "HF_HUB_OFFLINE": "the Hub's offline mode",
    "HF_TOKEN": "a Hugging Face token (shown as set, never printed)",
}
SECRET = {"HF_TOKEN"}
# extra -> the distributions it installs (pyproject.toml's optional-dependencies)
EXTRAS = {
    "vision": ["torchvision"],
    "ray": ["ray"],
    "hub": ["huggingface_hub", "datasets", "pyarrow", "pyyaml"],
    "test": ["pytest", "hypothesis", "ruff", "mypy"],
}


def register(app: typer.Typer) -> None:
    app.command("env")(env_cmd)


def env_cmd(json_: JsonOpt = False) -> None:
    """Show the versions, devices, threads, stores, environment variables and extras yoco sees.

    Example: `yoco env`, or `yoco env --json` for a bug report.
    """
    o = set_json(json_)
    doc: dict[str, Any] = {"yoco": __version__, "python": _python(), "torch": _torch(), "threads": _threads(),
                           "stores": _stores(), "environment": _variables(), "extras": _extras()}
    if o.json_mode:
        o.data(doc)
        return
    rows = [["yoco", doc["yoco"]], ["python", doc["python"]["version"] + f" ({doc['python']['executable']})"],
            ["platform", doc["python"]["platform"]], *_torch_rows(doc["torch"]), *_thread_rows(doc["threads"]),
            *_store_rows(doc["stores"])]
    o.out.print(output.table("yoco env", ["what", "this machine"], rows))
    env_rows = [[name, value, VARIABLES[name]] for name, value in doc["environment"].items()]
    o.out.print(output.table("environment variables yoco reads (set ones)", ["variable", "value", "for"],
                             env_rows or [["(none set)", "", ""]]))
    o.out.print(output.table("optional extras", ["extra", "installed"],
                             [[name, _extra_text(parts)] for name, parts in doc["extras"].items()]))


# -- what is gathered ----------------------------------------------------------------------------------------
def _python() -> dict:
    return {"version": platform.python_version(), "implementation": platform.python_implementation(),
            "executable": sys.executable, "platform": platform.platform(terse=True)}


def _torch() -> dict:
    try:
        import torch
    except ImportError as e:  # torch is a core dependency: say so rather than fail
        return {"error": f"torch cannot be imported: {e}"}
    mps = getattr(torch.backends, "mps", None)
    cuda = torch.cuda.is_available()
    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,  # None: a CPU-only (or ROCm/MPS) build
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps": bool(mps is not None and mps.is_available()),
    }


def _threads() -> dict:
    import torch

    from ..executors.local import usable_cores
    from ..nn.device import thread_policy

    policy = thread_policy()
    return {"cpus": os.cpu_count(), "usable_cores": usable_cores(), "torch_threads": torch.get_num_threads(),
            "policy": "auto" if policy is None or policy.fixed is None else str(policy.fixed),
            "policy_source": policy.source if policy is not None else "none (library default)"}


def _stores() -> dict:
    from ..store import Store

    store = Store(state.home, shared=state.shared)  # --shared, else YOCO_SHARED; nothing is created
    return {"home": _folder(store.root), "shared": [_folder(layer.root) for layer in store.layers]}


def _folder(path: Path) -> dict:
    """Where a store is, whether it exists and may be written, what it holds and what is free there."""
    doc: dict = {"path": str(path), "exists": path.is_dir()}
    if not doc["exists"]:
        return doc
    total = 0
    for root, _dirs, files in os.walk(path):  # lstat: a link inside the store is not followed
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    doc.update(bytes=total, writable=os.access(path, os.W_OK), free_bytes=shutil.disk_usage(path).free)
    return doc


def _variables() -> dict:
    from ..nn.device import thread_policy

    policy = thread_policy()
    ours = {"OMP_WAIT_POLICY"} if policy is not None and policy.wait_policy_set else set()
    return {name: ("(set)" if name in SECRET else os.environ[name] + (" (set by yoco)" if name in ours else ""))
            for name in VARIABLES if os.environ.get(name, "") != ""}


def _extras() -> dict:
    out: dict[str, dict[str, str | None]] = {}  # extra -> distribution -> version (None: not installed)
    for extra, dists in EXTRAS.items():
        out[extra] = {}
        for dist in dists:
            try:
                out[extra][dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[extra][dist] = None
    vision = out["vision"].get("torchvision")
    if vision is not None:  # its CUDA-only wheels install on a CPU machine and then fail to import
        try:
            import torchvision  # noqa: F401  imported only to see whether it works here
        except Exception as e:  # noqa: BLE001  any failure of a broken build is what this reports
            out["vision"]["torchvision"] = f"{vision} (import fails: {str(e).splitlines()[0][:80]})"
    return out


# -- how it is shown ---------------------------------------------------------------------------------------------
def _torch_rows(t: dict) -> list[list[str]]:
    if "error" in t:
        return [["torch", t["error"]]]
    build = f"CUDA {t['cuda_build']}" if t["cuda_build"] else "CPU only"
    devices = ", ".join(t["cuda_devices"]) or ("Apple MPS" if t["mps"] else "cpu")
    return [["torch", f"{t['version']} ({build})"], ["devices", devices]]


def _thread_rows(t: dict) -> list[list[str]]:
    text = (f"policy {t['policy']} (from {t['policy_source']}); torch now {t['torch_threads']}; "
            f"{t['usable_cores']} usable of {t['cpus']} cpus")
    return [["threads", text]]


def _store_rows(s: dict) -> list[list[str]]:
    rows = [["cache", _folder_text(s["home"], "not created yet")]]
    rows += [["shared store", _folder_text(f, "missing")] for f in s["shared"]]
    return rows


def _folder_text(f: dict, absent: str) -> str:
    if not f["exists"]:
        return f"{f['path']} ({absent})"
    mode = "" if f["writable"] else ", read-only"
    return f"{f['path']} ({output.human_bytes(f['bytes'])}{mode}; {output.human_bytes(f['free_bytes'])} free)"


def _extra_text(parts: dict) -> str:
    got = [f"{d} {v}" for d, v in parts.items() if v is not None]
    missing = [d for d, v in parts.items() if v is None]
    if not got:
        return "no"
    return ", ".join(got) + (f" (missing: {', '.join(missing)})" if missing else "")
