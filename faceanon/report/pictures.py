"""The report's picture strip: a few probes, original and anonymized by every variant.

The pictures are made again from the dataset with the run's settings and seed rule, so
they show what the recognizer saw; nothing is stored in the results database. Beside
them, for every restoration attack the run measured (an attack that changes the pixels
before encoding: median, deblur, unpixelate, sharpen), what that attacker recovered from
the same anonymized picture (:meth:`faceanon.attacks.Attack.restore`, milliseconds each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceanon.protocol import OnMiss, image_rng
from faceanon.store import ResultsDB

__all__ = ["Pictures", "make_pictures"]


@dataclass
class Pictures:
    """The picture strip: originals and every (method, k) of a few identities."""

    dataset: str = ""
    root: str = ""
    columns: list[dict] = field(default_factory=list)   # {'method', 'k'}
    # {'method', 'k', 'attack', 'column': index into columns}
    restorations: list[dict] = field(default_factory=list)
    # {'identity', 'key', 'original', 'cells', 'restored' (one per restoration)}
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _probe_keys(db: ResultsDB, run_id: int, identities: int) -> list[str]:
    chosen, seen = [], set()
    for key, _ in db.probe_keys(run_id):
        identity = key.split("/", 1)[0]
        if identity not in seen:
            seen.add(identity)
            chosen.append(key)
        if len(chosen) == identities:
            break
    return chosen


def _thumbnail(image: np.ndarray, path: Path, *, height: int = 112) -> None:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    width = max(1, round(picture.width * height / picture.height))
    picture.resize((width, height), Image.Resampling.LANCZOS).save(path, quality=88)


def _restoration_attacks(rows: Sequence[Mapping], columns: Sequence[Mapping],
                         notes: list[str]) -> tuple[list[dict], dict]:
    """The (method, k, attack) whose attack restores pixels, and the attack objects."""
    from faceanon.attacks import Attack, get_attack

    measured = dict.fromkeys((r["method"], r["k"], r.get("attack") or "detect")
                             for r in rows if not r["is_reference"])
    attacks: dict[str, Attack | None] = {}
    out = []
    for j, column in enumerate(columns):
        for method, k, name in measured:
            if (method, k) != (column["method"], column["k"]):
                continue
            if name not in attacks:
                try:
                    attack = get_attack(name)
                except Exception as error:  # a plugin missing here must not stop the report
                    notes.append(f"attack {name}: not available here ({error}); what it "
                                 "recovered is not shown.")
                    attack = None
                # Only an attack that changes the pixels has something to show.
                attacks[name] = attack if attack is not None and \
                    type(attack).restore is not Attack.restore else None
            if attacks[name] is not None:
                out.append({"method": method, "k": k, "attack": name, "column": j})
    return out, attacks


def make_pictures(db: ResultsDB, run: Mapping, rows: Sequence[Mapping], folder: Path, *,
                  identities: int = 3) -> Pictures:
    """Re-create originals and anonymized versions of a few probes as thumbnails.

    The regions are found again with the run's detector, region and miss settings
    (:func:`faceanon.detect.anonymization_regions`) and each method is applied with the
    run's per-image generator (:func:`faceanon.protocol.image_rng`), so the pictures are
    what the recognizer saw. Set-based methods (k-Same) depend on the whole set and are
    skipped with a note, as is everything when the dataset folder is not on this machine.
    For each restoration attack the run measured on a shown (method, k), the attack's
    :meth:`~faceanon.attacks.Attack.restore` of that anonymized picture is shown too,
    filtering the largest anonymized region (the whole image when no face was found).

    Parameters
    ----------
    db : ResultsDB
    run : mapping
        The run (its config holds ``dataset_root``, ``detector``, ``region``, ``seed``).
    rows : sequence of mapping
        The run's leaderboard rows: which (method, k) to show.
    folder : Path
        Where the thumbnails are written (``img/`` of the report).
    identities : int
        How many identities (one probe image each).

    Returns
    -------
    Pictures
    """
    from faceanon.attacks import largest_box
    from faceanon.detect import anonymization_regions
    from faceanon.imageio import read_image
    from faceanon.methods import get_method, needs_whole_set

    config = run.get("config") or {}
    pictures = Pictures(dataset=str(run.get("dataset_name") or ""),
                        root=str(config.get("dataset_root") or ""))
    if identities <= 0:
        return pictures
    try:
        on_miss = OnMiss(config.get("on_miss") or OnMiss.WHOLE)
    except ValueError:
        pictures.notes.append(f"The run's on_miss {config.get('on_miss')!r} is unknown to "
                              "this version, so no pictures were made.")
        return pictures
    root = Path(pictures.root) if pictures.root else None
    if root is None or not root.is_dir():
        where = f"{pictures.root}" if pictures.root else "(the run did not record it)"
        pictures.notes.append(f"The dataset folder {where} is not on this machine, so no "
                              "pictures were made.")
        return pictures
    keys = _probe_keys(db, int(run["id"]), identities)
    variants = list(dict.fromkeys((r["method"], r["k"]) for r in rows if not r["is_reference"]))
    methods = {}
    for name, _ in variants:
        if name in methods:
            continue
        try:
            methods[name] = get_method(name)
        except Exception as error:  # a plugin missing here must not stop the report
            methods[name] = None
            pictures.notes.append(f"{name}: not available here ({error}); not shown.")
            continue
        if needs_whole_set(methods[name]):
            pictures.notes.append(f"{name} anonymizes a whole set at once, so a single "
                                  "picture cannot be re-created; not shown.")
            methods[name] = None
    pictures.columns = [{"method": m, "k": k} for m, k in variants if methods.get(m)]
    pictures.restorations, attacks = _restoration_attacks(rows, pictures.columns,
                                                          pictures.notes)
    detector = config.get("detector", "hog")
    region = config.get("region", "face")
    margin = float(config.get("margin", 0.0) or 0.0)
    seed = int(config.get("seed", 0) or 0)
    folder.mkdir(parents=True, exist_ok=True)
    resolved_root = root.resolve()
    failed: dict[str, str] = {}
    for i, key in enumerate(keys):
        path = (root / key).resolve()
        row = {"identity": key.split("/", 1)[0], "key": key, "original": None, "cells": [],
               "restored": [None] * len(pictures.restorations)}
        pictures.rows.append(row)
        if not path.is_relative_to(resolved_root):
            pictures.notes.append(f"{key}: outside the dataset folder; skipped.")
            continue
        try:
            image = read_image(path)
            regions = anonymization_regions(image, detector=detector, region=region,
                                            margin=margin, on_miss=on_miss)
        except Exception as error:
            pictures.notes.append(f"{key}: could not be read ({error}).")
            continue
        boxes = list(regions.boxes)
        # where the benchmark's attacker filters: the largest region, else the whole image
        filtered = largest_box(boxes) if regions.found else None
        _thumbnail(image, folder / f"{i}-original.jpg")
        row["original"] = f"img/{i}-original.jpg"
        row["found"] = regions.found
        for j, column in enumerate(pictures.columns):
            method, k = column["method"], column["k"]
            cell = None
            try:
                anonymized = methods[method].anonymize(
                    image, boxes, k=k, rng=image_rng(seed, method, k, key))
                _thumbnail(anonymized, folder / f"{i}-{j}.jpg")
                cell = f"img/{i}-{j}.jpg"
            except Exception as error:
                failed.setdefault(method, str(error))
            row["cells"].append(cell)
            if cell is None:
                continue
            for r, restoration in enumerate(pictures.restorations):
                if restoration["column"] != j:
                    continue
                name = restoration["attack"]
                try:
                    restored = attacks[name].restore(anonymized, region=filtered,
                                                     method=method, k=k)
                    _thumbnail(restored, folder / f"{i}-{j}-r{r}.jpg")
                    row["restored"][r] = f"img/{i}-{j}-r{r}.jpg"
                except Exception as error:
                    failed.setdefault(f"{name} on {method}", str(error))
    for method, error in failed.items():
        pictures.notes.append(f"{method}: could not be re-created here ({error}).")
    return pictures
