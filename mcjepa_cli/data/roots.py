"""Where datasets live: ``--root DIR`` (the dataset's own folder) or ``$MCJEPA_DATA/<Name>``.

DESIGN.md section 6 fixes the folder names under ``$MCJEPA_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcjepa_cli.errors import UserError

# dataset key (as used on the command line / in recipes) -> folder name under $MCJEPA_DATA
DATA_FOLDER_NAMES: dict[str, str] = {
    "sintel": "Sintel",
    "kitti-2015": "KITTI2015",
    "kitti-2012": "KITTI2012",
    "chairs": "FlyingChairs",
    "things": "FlyingThings3D",
    "hd1k": "HD1K",
    "middlebury": "Middlebury",
    "davis": "DAVIS",
    "voc": "VOC2012",
    "cityscapes": "Cityscapes",
    "ade20k": "ADEChallengeData2016",
    "imagenet": "ImageNet",
}


def resolve_root(dataset: str, root: str | Path | None, layout_hint: str = "") -> Path:
    """Return the folder of ``dataset``: ``root`` when given, else ``$MCJEPA_DATA/<Name>``.

    Args:
        dataset: a key of ``DATA_FOLDER_NAMES``.
        root: the user's ``--root`` (or recipe ``root``), or None.
        layout_hint: what the folder must hold, quoted in the error message.

    Raises:
        UserError: the folder does not exist or no location was given.
    """
    hint = f" (expected a folder holding {layout_hint})" if layout_hint else ""
    if root is not None and str(root) != "":
        path = Path(root).expanduser()
        if not path.is_dir():
            raise UserError(path, f"dataset folder not found{hint}")
        return path
    base = os.environ.get("MCJEPA_DATA")
    name = DATA_FOLDER_NAMES.get(dataset, dataset)
    if not base:
        raise UserError(
            f"--root for {dataset}",
            f"no dataset location given: pass --root DIR or set MCJEPA_DATA so that "
            f"$MCJEPA_DATA/{name} exists{hint}",
        )
    path = Path(base).expanduser() / name
    if not path.is_dir():
        raise UserError(path, f"dataset folder not found ($MCJEPA_DATA/{name}){hint}")
    return path
