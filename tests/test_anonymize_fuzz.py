"""Fuzzing ``faceanon anonymize`` with real faces in every kind of file, intact and damaged.

One run of the command (``--on-miss whole``, so that every readable file is written) over a
folder holding every supported kind of file (:data:`image_variants.VARIANTS`) made from
real LFW faces, seeded damaged copies of each (truncated, bits flipped, blocks zeroed:
:func:`image_variants.fuzz_corpus`) and a few files that are no images at all. Whatever
the bytes, the command must

* never crash with a traceback (exit 0, or 1 when some file failed);
* report each failure: one line on stderr naming the file, and its entry in ``--json``;
* never write a file it could not read, nor leave a temporary file behind;
* never write a frame whose anonymized regions equal the input's (a damaged file that
  decodes to smooth mush, which a blur cannot change, is the one exception: there is no
  face in it to hide), nor drop or add a frame;
* anonymize every intact file with a face found in every frame;
* leave every input as it was.

The counts of inputs and outcomes are printed (also without ``-s``). More faces and
another damage seed: ``FACEANON_FUZZ_FACES=6 FACEANON_FUZZ_SEED=7 pytest
tests/test_anonymize_fuzz.py``.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from image_variants import VARIANTS, fuzz_corpus

from faceanon.cli import main
from faceanon.formats import read_document, rgb_view
from faceanon.imageio import read_image
from faceanon.methods import get_method

SEED = int(os.environ.get("FACEANON_FUZZ_SEED", "0"))
FACES = int(os.environ.get("FACEANON_FUZZ_FACES", "2"))
#: Below this mean absolute change (8-bit levels) a region counts as unchanged.
UNCHANGED = 2.0


def not_images(folder: Path) -> dict[Path, str]:
    """Files that are no images, under image and other names."""
    files = {
        folder / "notes.txt": "text under a text name",
        folder / "notes.jpg": "text under an image name",
        folder / "random.png": "random bytes",
        folder / "empty.gif": "an empty file",
    }
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "notes.jpg").write_text("not an image either\n")
    (folder / "random.png").write_bytes(np.random.default_rng(SEED).bytes(3000))
    (folder / "empty.gif").write_bytes(b"")
    return files


def unchanged_regions(source: Path, output: Path, frame_boxes: list) -> list[str]:
    """The regions of ``output`` that show what ``source`` shows there (see the module)."""
    blur = get_method("blur")
    before, after = read_document(source), read_document(output)
    if len(after.frames) != len(before.frames):
        return [f"{len(before.frames)} frames in, {len(after.frames)} out"]
    problems = []
    frames = zip(before.frames, after.frames, frame_boxes, strict=True)
    for index, (old, new, boxes) in enumerate(frames):
        view, written = rgb_view(old).astype(int), rgb_view(new).astype(int)
        blurred = blur.anonymize(rgb_view(old), [tuple(b) for b in boxes], k=31,
                                 rng=np.random.default_rng(0))
        for x, y, w, h in boxes:
            region = (slice(y, y + h), slice(x, x + w))
            if np.abs(blurred[region] - view[region]).mean() < UNCHANGED:
                continue  # smooth: a blur cannot change it, and no face is in it
            if np.abs(written[region] - view[region]).mean() < UNCHANGED:
                problems.append(f"frame {index + 1}: region {(x, y, w, h)} unchanged")
    return problems


def kind_of_problem(error: str) -> str:
    """The problem without its details: 'corrupt or truncated image', 'file is empty'..."""
    return error.split(" (")[0].split(":")[0]


@pytest.mark.realdata
def test_the_command_fails_closed_on_every_kind_of_file_intact_or_damaged(
    lfw, tmp_path, capsys
):
    people = sorted(lfw.images_of().items())
    step = max(len(people) // FACES, 1)
    faces = [read_image(lfw.path(images[0])) for _, images in people[::step][:FACES]]
    folder = tmp_path / "in"
    corpus = {entry.path: entry for entry in fuzz_corpus(faces, folder, seed=SEED)}
    junk = not_images(folder)
    inputs = {path: path.read_bytes() for path in folder.iterdir()}
    assert len(inputs) == len(corpus) + len(junk) == len(faces) * len(VARIANTS) * 3 + len(junk)

    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "anonymize", str(folder), "-o", str(out), "--method", "blur", "--k", "31",
        "--on-miss", "whole", "--seed", str(SEED), "--json", "--quiet",
    ])

    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception)
    assert "Traceback" not in result.output
    document = json.loads(result.stdout)
    entries = {Path(entry["input"]): entry for entry in document["files"]}
    assert set(entries) == set(inputs), "every input has its entry"
    failed = [path for path, entry in entries.items() if entry["status"] == "failed"]
    assert result.exit_code == (1 if failed else 0)
    assert {entry["status"] for entry in entries.values()} <= {"ok", "whole", "failed"}

    outcomes: collections.Counter = collections.Counter()
    problems: collections.Counter = collections.Counter()
    violations = []
    for path, entry in sorted(entries.items()):
        fuzz = corpus.get(path)
        origin = "not an image" if fuzz is None else (
            "intact" if fuzz.mutation is None else f"damaged ({fuzz.mutation.kind})")
        outcomes[(origin, entry["status"])] += 1
        target = out / path.name
        if entry["status"] == "failed":
            problems[kind_of_problem(entry["error"])] += 1
            lines = [line for line in result.stderr.splitlines() if str(path) in line]
            if len(lines) != 1 or entry["error"] not in lines[0]:
                violations.append(f"{path.name}: failure not reported once: {lines}")
            if target.exists():
                violations.append(f"{path.name}: failed, yet written")
            if origin == "intact":
                violations.append(f"{path.name}: intact file failed: {entry['error']}")
            continue
        if origin == "intact" and entry["status"] != "ok":
            violations.append(f"{path.name}: intact, yet a frame with no face found")
        violations += [f"{path.name}: {problem}"
                       for problem in unchanged_regions(path, target, entry["boxes"])]

    assert not violations, "\n".join(violations)
    assert not [p for p in out.rglob(".*")], "no temporary file is left"
    assert {path: path.read_bytes() for path in folder.iterdir()} == inputs
    assert outcomes[("intact", "ok")] == len(faces) * len(VARIANTS)

    with capsys.disabled():
        print(f"\nfuzz (seed {SEED}, {len(faces)} faces): {len(inputs)} inputs, "
              f"{sum(e['status'] != 'failed' for e in entries.values())} written, "
              f"{len(failed)} failed cleanly, {document['totals']['seconds']:.1f} s")
        for (origin, status), count in sorted(outcomes.items()):
            print(f"  {origin:<20} {status:<7} {count}")
        for problem, count in problems.most_common():
            print(f"  failure: {problem:<40} {count}")
