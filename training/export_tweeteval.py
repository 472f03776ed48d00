"""``python -m training.export_tweeteval OUT_DIR``: write TweetEval sentiment in the cardiffnlp layout.

For machines without the shared copy (CI runners): downloads ``cardiffnlp/tweet_eval`` (``sentiment``)
with `datasets` (``pip install 'online-reputation[online-data]'``) and writes
``{train,val,test}_{text,labels}.txt`` plus ``mapping.txt``, which is what
:func:`training.data.load_split` and the tests read. Texts are written stripped, one per line (the Hub
copy is already stripped); a line break inside a text would shift every later line, so it becomes a space.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from schemas import LABELS
from training.data import _HF_SPLIT, HF_DATASET, SPLITS, load_split

_BREAKS = str.maketrans({"\n": " ", "\r": " "})


def write_split(out_dir: Path, split: str, texts: Iterable[str], labels: Iterable[int]) -> int:
    """Write one split's two files; returns the number of rows."""
    text_lines = [str(t).translate(_BREAKS).strip() for t in texts]
    label_lines = [str(int(label)) for label in labels]
    if len(text_lines) != len(label_lines):
        raise ValueError(f"{split}: {len(text_lines)} texts but {len(label_lines)} labels")
    (out_dir / f"{split}_text.txt").write_text("".join(f"{t}\n" for t in text_lines), encoding="utf-8")
    (out_dir / f"{split}_labels.txt").write_text("".join(f"{x}\n" for x in label_lines), encoding="utf-8")
    return len(text_lines)


def export(out_dir: Path, rows: Mapping[str, tuple[Sequence[str], Sequence[int]]]) -> dict[str, int]:
    """Write every split in ``rows`` (keyed train/val/test), then read them back through the real loader."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {split: write_split(out_dir, split, *rows[split]) for split in SPLITS}
    (out_dir / "mapping.txt").write_text(
        "".join(f"{i}\t{name}\n" for i, name in enumerate(LABELS)), encoding="utf-8"
    )
    for split in SPLITS:
        loaded = load_split(split, out_dir)
        if len(loaded) != counts[split]:
            raise ValueError(f"{split}: wrote {counts[split]} rows, read back {len(loaded)}")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Download with `datasets` and export."""
    parser = argparse.ArgumentParser(prog="python -m training.export_tweeteval", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="e.g. ../shared/data/tweeteval-sentiment")
    args = parser.parse_args(argv)
    try:
        import datasets
    except ImportError:
        print("needs `datasets`: pip install 'online-reputation[online-data]'", file=sys.stderr)
        return 2
    rows: dict[str, tuple[list[str], list[int]]] = {}
    for split in SPLITS:
        data = datasets.load_dataset(*HF_DATASET, split=_HF_SPLIT[split])
        rows[split] = ([str(t) for t in data["text"]], [int(x) for x in data["label"]])
    counts = export(args.out_dir, rows)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
