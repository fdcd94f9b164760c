"""One checkpoint format for every use: a dict of tensors and plain values saved with `torch.save`,
written atomically, and always read back with `torch.load(weights_only=True)`, so a checkpoint
from someone else cannot run code when loaded (and only after every zip member passes its CRC check,
so damaged bytes are an error rather than silently wrong weights).

Keys: format, format_version, config (the full recipe), model (state dict), tokenizer
(to_dict() of the tokenizer), iter_num, best_val_loss, metrics; a resumable "last" checkpoint
adds optimizer, scaler, rng and sampler state.
"""

from __future__ import annotations

import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightbrain.atomic_io import atomic_path
from lightbrain.config import LightBrainConfig, config_from_dict

FORMAT = "lightbrain-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrappers' prefixes (torch.compile's `_orig_mod.`, DDP's `module.`) so weights load anywhere."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: LightBrainConfig, tokenizer: dict,
                    iter_num: int = 0, best_val_loss: float | None = None, metrics: dict | None = None,
                    training_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically; `training_state` (optimizer, rng, sampler...) makes it resumable."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "model": clean_state_dict(unwrap_model(model).state_dict()),
        "tokenizer": dict(tokenizer),
        "iter_num": int(iter_num),
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
        "metrics": dict(metrics or {}),
    }
    if training_state:
        ckpt.update(training_state)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    except (OSError, RuntimeError) as exc:
        # torch.save reports a full disk as a RuntimeError from its zip writer ("unexpected pos ..."),
        # so say what happened in words, with the space left.
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        raise CheckpointError(
            f"could not write the checkpoint {path} ({str(exc).splitlines()[0]}); {free}. The previous {path.name}, "
            "if any, is unchanged. Free some disk space or point train.out_dir elsewhere, then resume"
        ) from exc
    return path


def _check_archive(path: Path) -> None:
    """A checkpoint is a zip archive (torch.save's format): refuse anything else before unpickling a byte,
    and check every member's CRC-32, because torch.load reads flipped bytes in the weights without noticing."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        kind = ("is empty" if not head else "looks like JSON or text" if head[:1] in b"{[\"" else
                "is a bare pickle, which LightBrain never unpickles" if head[:1] == b"\x80" else "is not one")
        raise CheckpointError(f"{path} is not a LightBrain checkpoint: checkpoints are PyTorch zip archives "
                              f"written by torch.save, and this file {kind} (it starts with {head!r})")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read ({type(exc).__name__}: "
                              f"{exc}); use an earlier copy or the other checkpoint (.pt / .last.pt)") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupted: its member {bad!r} fails its CRC-32 check (bytes changed "
                              "on disk or in transfer); use an earlier copy or the other checkpoint (.pt / .last.pt)")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects; errors say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} was refused: it holds objects other than tensors and plain values, which could run code "
            f"when loaded, so LightBrain does not unpickle it ({str(exc).splitlines()[0]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes torch raise, say so in words
        raise CheckpointError(f"{path} is truncated or corrupted and cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a LightBrain checkpoint (no format={FORMAT!r} marker)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {ckpt['format_version']}; this LightBrain reads "
                              f"up to {FORMAT_VERSION}: upgrade lightbrain")
    for key in ("config", "model", "tokenizer"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks the key {key!r}")
    return ckpt


def load_state_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """load_state_dict with an error that lists missing/unexpected keys and shape mismatches."""
    state_dict = clean_state_dict(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the model config:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}"
                         f"{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes[:8]))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizer, checkpoint dict) from a checkpoint file. device "auto" is CUDA, then
    MPS, then the CPU, as in training."""
    from lightbrain.data.tokenizers import tokenizer_from_dict
    from lightbrain.models.lightbrain_tiny import LightBrainTiny
    from lightbrain.training.utils import pick_device

    device = pick_device(device, setting="device")  # before the checkpoint is read, which can take seconds

    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        config = config_from_dict(ckpt["config"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: its saved config is invalid: {exc}") from None
    model = LightBrainTiny(config.model)
    load_state_into(model, ckpt["model"], source=str(path))
    model.to(device).eval()
    return model, tokenizer_from_dict(ckpt["tokenizer"]), ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> LightBrainConfig:
    return config_from_dict(ckpt["config"])
