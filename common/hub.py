"""Before a model loads: a hub id must be in the local cache or downloadable, else one line with the fix.

Loading fails on these far from the cause (a traceback from deep inside transformers after the data and the memory
plan were checked), and offline, behind a firewall or on a gated Llama repo, that is the first thing a user meets.
"""
from pathlib import Path

from common.errors import UserError


def is_a_path(model: str) -> bool:
    """True when `model` can only be meant as a local path (absolute, ./ ../ ~, or more than owner/name)."""
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1


def check_model_available(model: str, flag: str = "--model") -> None:
    """Return if `model` is a local path, or a hub id whose config.json is cached or downloads (one small request;
    the weights follow when the model loads). Otherwise raise a UserError that says why and what to do."""
    if Path(model).expanduser().exists():
        return
    if is_a_path(model):
        raise UserError(f"{flag} {model}: not found (no such directory); give a model directory or a hub id")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RemoteEntryNotFoundError, RepositoryNotFoundError)

    try:
        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return
    except HFValidationError:
        raise UserError(f"{flag} {model}: no such directory, and not a hub id (owner/name)") from None
    local = f"or download it where there is a network (hf download {model} --local-dir DIR) and pass {flag} DIR"
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"{flag} {model}: not in the local cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is "
                        f"set; unset it to download, {local}")
    try:
        hf_hub_download(model, "config.json")
    except GatedRepoError:  # before RepositoryNotFoundError: it is one
        raise UserError(f"{flag} {model}: a gated repo; accept its licence on https://huggingface.co/{model} and "
                        "log in with `hf auth login`, or use an ungated copy (the unsloth/ repos)") from None
    except RepositoryNotFoundError:
        raise UserError(f"{flag} {model}: no such model on {constants.ENDPOINT} (check the spelling; a private repo "
                        "needs `hf auth login`)") from None
    except RemoteEntryNotFoundError:
        raise UserError(f"{flag} {model}: the repo has no config.json, so it is not a transformers model") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:  # no network, a proxy, the hub is down
        cause = err.__cause__ or err  # the network's own words ("Name or service not known"), not the hub's summary
        reason = (str(cause).splitlines() or [type(cause).__name__])[0][:160]
        raise UserError(f"{flag} {model}: cannot download it from {constants.ENDPOINT} ({reason}); check the "
                        "network (in mainland China: export HF_ENDPOINT=https://hf-mirror.com), " + local) from None
