"""The torch device a command or API call runs on: named, checked, with an error that says what to do."""
from __future__ import annotations

from evaluator.errors import APBError, Problem


def default_device() -> str:
    """``cuda`` when a CUDA GPU is available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checked_device(name: str | None) -> str:
    """*name* (default: :func:`default_device`) if torch can use it here; an APBError otherwise (no GPU, an
    index beyond the GPUs present, an unknown device type)."""
    import torch

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise APBError(Problem("device", f"{name!r} is not a torch device ({error}); use 'cpu', 'cuda' or "
                                         "'cuda:<index>'")) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise APBError(Problem("device", f"{name!r}: no CUDA GPU is available on this machine "
                                             "(torch.cuda.is_available() is False); use device='cpu' (slower: "
                                             "evaluate fewer samples with n=..., or run on a GPU machine)"))
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise APBError(Problem("device", f"{name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                             f"numbered from 0"))
    return str(device)
