"""Offline image and text sources: which Debian packages feed training, which the benchmark.

The two lists are disjoint, so a benchmark figure is never measured on pictures the descriptor
was trained on. Some packages are reserved for an independent evaluation and are never read,
installed or listed here by any tool of this project (``RESERVED``); ``check_allowed`` refuses
them and their close relatives (other releases of the same artwork) by name.

Packages are installed with apt when missing (``ensure_installed``), then their files are found
with ``dpkg -L``; nothing is downloaded at run time by Python code.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from pathlib import Path

from dedup.errors import InvalidArgument

# Reserved for the independent evaluation: never train, calibrate or benchmark on these.
RESERVED = ("lomiri-wallpapers-16.04", "mate-backgrounds", "plasma-workspace-wallpapers",
            "ukui-wallpapers", "tuxpaint-stamps-default", "fortunes*")
# Their relatives may ship the same pictures or quotes under another name: refused as well.
_RESERVED_FAMILIES = ("lomiri-wallpapers*", "mate-background*", "plasma-*wallpaper*",
                      "ukui-wallpaper*", "tuxpaint*", "fortune*")

# Pictures the copy-detection descriptor is trained on (dedup-train).
TRAIN_PACKAGES = (
    "openclipart-png", "0ad-data", "supertuxkart-data", "wesnoth-1.16-data", "hedgewars-data",
    "megaglest-data", "warzone2100-data", "flightgear-data-base", "endless-sky-data",
    "freedink-data", "blender-data", "marble-data",
)
# Pictures the benchmark draws seeds and distractors from (dedup-eval); never trained on.
# Besides these, the benchmark uses the images that ship in scikit-image, scikit-learn and
# matplotlib.
BENCH_PACKAGES = (
    "gnome-backgrounds", "sway-backgrounds", "desktop-base", "debian-edu-artwork",
    "debian-edu-artwork-buster", "debian-edu-artwork-emerald", "debian-edu-artwork-homeworld",
    "debian-edu-artwork-softwaves", "debian-edu-artwork-spacefun", "gcompris-qt-data",
    "stellarium-data", "frozen-bubble-data", "pingus-data", "kdegames-card-data-kf5",
    "tuxtype-data", "xscreensaver-data-extra", "gimp-data", "cinnamon-desktop-data",
    "naev-data", "widelands-data", "scorched3d-data", "supertux-data", "torcs-data",
    "redeclipse-data",
)
# A package not listed above may be added to one side only: training takes names starting
# with a-l (and digits), the benchmark names starting with m-z, so the sides never overlap.
_TRAIN_INITIALS = tuple("0123456789abcdefghijkl")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def is_reserved(package: str) -> bool:
    """True for a reserved package or a relative of one (matched by name)."""
    name = package.strip().lower()
    return any(fnmatch.fnmatch(name, pat) for pat in RESERVED + _RESERVED_FAMILIES)


def side_of(package: str) -> str:
    """``"train"`` or ``"bench"``: the one side a package may feed."""
    if package in TRAIN_PACKAGES:
        return "train"
    if package in BENCH_PACKAGES:
        return "bench"
    return "train" if package[:1].lower() in _TRAIN_INITIALS else "bench"


def check_allowed(package: str, side: str) -> None:
    """Refuse a reserved package, or one that belongs to the other side."""
    if side not in ("train", "bench"):
        raise InvalidArgument(f"side must be 'train' or 'bench', got {side!r}")
    if is_reserved(package):
        raise InvalidArgument(f"{package} is reserved for the independent evaluation")
    if side_of(package) != side:
        raise InvalidArgument(f"{package} feeds the {side_of(package)} side, not {side}")


def installed_version(package: str) -> str | None:
    """The installed Debian version of ``package``, or None."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}|${Version}", package],
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.startswith("install ok installed"):
        return None
    return out.stdout.split("|", 1)[1]


def ensure_installed(packages: list[str] | tuple[str, ...], side: str) -> dict[str, str]:
    """Install missing packages with apt (checked against ``side``); returns name -> version."""
    for p in packages:
        check_allowed(p, side)
    missing = [p for p in packages if installed_version(p) is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise InvalidArgument(f"apt-get not found; install {missing} by hand")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                               *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    return {p: installed_version(p) or "?" for p in packages}


def package_files(package: str, side: str, exts: tuple[str, ...] = IMAGE_EXTS) -> list[Path]:
    """Regular files of an installed package with one of ``exts`` (sorted)."""
    check_allowed(package, side)
    out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if out.returncode != 0:
        raise InvalidArgument(f"package {package} is not installed")
    files = [Path(line) for line in out.stdout.splitlines()
             if line.lower().endswith(exts) and "/usr/share/doc/" not in line]
    return sorted(p for p in files if p.is_file() and not p.is_symlink())
