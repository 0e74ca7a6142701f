"""Spine measurements from predicted masks against the same measurements from expert masks.

For every patient of a dataset split (default: the test split of the SPIDER dataset that
``make model`` builds), predict the mask with the shipped model, measure both masks with
``lumbarseg.analysis`` and compare level by level: per measurement the mean absolute difference
(MAD), bias and Bland-Altman 95 % limits of agreement; the number of levels found on each side;
Dice per level. Writes ``OUT/agreement.json``, ``OUT/differences.csv`` and both reports per case,
and prints a Markdown table.

    python benchmarks/measure_agreement.py [--dataset build/spider/spider.yml] [--split test]

The dataset comes from ``lumbarseg dataset from-slices ../shared/data/spider-t2space-png/images
../shared/data/spider-t2space-png/masks --label-map spider-png --spacing 0.47,0.47,0.9
--split 0.8,0.1,0.1 --seed 0 -o build/spider/spider.yml``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {  # (kind, measurement) -> MAD target, from issue 11
    ("disc", "anterior_height_mm"): 1.0, ("disc", "middle_height_mm"): 1.0, ("disc", "posterior_height_mm"): 1.0,
    ("disc", "canal_ap_mm"): 1.0, ("vertebra", "canal_ap_mm"): 1.0,
    ("vertebra", "anterior_height_mm"): 1.5, ("vertebra", "middle_height_mm"): 1.5,
    ("vertebra", "posterior_height_mm"): 1.5, ("alignment", "lordosis_deg"): 3.0,
}


def patient_stacks(dataset, split: str) -> Dict[str, List[Tuple[int, Path, Path]]]:
    stacks: Dict[str, List[Tuple[int, Path, Path]]] = {}
    for index, (image, mask) in zip(dataset.split_indices(split), dataset.pairs(split)):
        order = dataset.slice_index(index)
        stacks.setdefault(dataset.patient(index), []).append((order if order is not None else index, image, mask))
    return {p: sorted(items, key=lambda t: t[0]) for p, items in sorted(stacks.items())}


def main() -> int:
    from lumbarseg.analysis import analyse, write_case
    from lumbarseg.analysis.compare import agreement, compare, level_counts, level_dice
    from lumbarseg.data.deephealth_yaml import load_dataset
    from lumbarseg.inference.predict import Predictor
    from lumbarseg.io.readers import read_png_stack

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "build" / "spider" / "spider.yml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "build" / "measure-agreement")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    predictor = Predictor(args.model)
    spacing = (float(dataset.meta.get("slice_spacing") or 1.0), *(dataset.spacing or predictor.metadata.spacing))
    rows, cases = [], {}
    for patient, items in patient_stacks(dataset, args.split).items():
        image = read_png_stack([i for _, i, _ in items], spacing=spacing, source=f"{patient} images")
        truth = read_png_stack([m for _, _, m in items], spacing=spacing, source=f"{patient} masks")
        expert = analyse(truth.with_array(dataset.label_map.to_index(truth.array)), dataset.classes,
                         f"{patient}_expert", image)
        prediction = predictor(image)
        predicted = analyse(prediction.mask.with_array(prediction.class_indices()), prediction.classes,
                            f"{patient}_predicted", image)
        for report in (expert, predicted):
            write_case(report, args.output / "cases")
        rows += compare(predicted, expert, patient)
        dice = level_dice(predicted, expert)
        cases[patient] = {**level_counts(predicted, expert), "slices": len(items),
                          "same_names": predicted.names == expert.names,
                          "expert_names": expert.names, "predicted_names": predicted.names,
                          "level_dice_mean": sum(dice.values()) / max(len(dice), 1), "level_dice": dice}
        print(f"{patient}: expert {len(expert.levels)} levels, predicted {len(predicted.levels)}, "
              f"same names {cases[patient]['same_names']}, mean level Dice {cases[patient]['level_dice_mean']:.3f}",
              file=sys.stderr)
    summary = agreement(rows)
    for entry in summary:
        target = TARGETS.get((entry["kind"], entry["measurement"]))
        entry["target_mad"] = target
        entry["meets_target"] = None if target is None else entry["mad"] <= target
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "agreement.json").write_text(json.dumps({"dataset": str(args.dataset), "split": args.split,
                                                            "cases": cases, "agreement": summary}, indent=2) + "\n")
    with open(args.output / "differences.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["case"])
        writer.writeheader()
        writer.writerows(rows)
    print("| structure | measurement | n | MAD | bias | 95 % limits | target |")
    print("|---|---|---|---|---|---|---|")
    for e in summary:
        target = "" if e["target_mad"] is None else f"{e['target_mad']:g} ({'met' if e['meets_target'] else 'missed'})"
        print(f"| {e['kind']} | {e['measurement']} | {e['n']} | {e['mad']:.2f} | {e['bias']:+.2f} | "
              f"{e['loa_low']:+.2f} to {e['loa_high']:+.2f} | {target} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
