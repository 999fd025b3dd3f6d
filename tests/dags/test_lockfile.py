"""Merging the stage tasks' dvc.lock entries into one lock per run (orchestration/lockfile.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestration.lockfile import LockMergeError, dump, latest_entries, merge, parse, verify

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["clean", "split", "train", "crossval@0", "crossval@1", "crossval_summary", "export"]


def entry(cmd: str, deps: dict[str, str], outs: dict[str, str]) -> dict:
    """A dvc.lock stage entry as DVC writes it (hash md5, sizes), with the given md5s."""
    return {
        "cmd": cmd,
        "deps": [{"path": p, "hash": "md5", "md5": m, "size": 10} for p, m in deps.items()],
        "outs": [{"path": p, "hash": "md5", "md5": m, "size": 10} for p, m in outs.items()],
    }


def result(stage: str, lock_entry: dict, try_number: int = 1, outcome: str = "ran") -> dict:
    return {"stage": stage, "outcome": outcome, "try_number": try_number, "lock": {stage: lock_entry}}


def pipeline(data: str = "d1", model: str = "m1") -> dict[str, dict]:
    """Entries of one consistent run: data version `data`, model bytes `model`."""
    return {
        "clean": entry("clean", {"raw.parquet": f"raw-{data}"}, {"clean.parquet": f"clean-{data}"}),
        "split": entry("split", {"clean.parquet": f"clean-{data}"}, {"split.parquet": f"split-{data}"}),
        "train": entry(
            "train", {"clean.parquet": f"clean-{data}", "split.parquet": f"split-{data}"}, {"model.pt": model}
        ),
        **{
            f"crossval@{i}": entry(
                f"crossval {i}",
                {"clean.parquet": f"clean-{data}", "split.parquet": f"split-{data}"},
                {f"metrics/crossval/fold-{i}.json": f"fold{i}-{data}"},
            )
            for i in (0, 1)
        },
        "crossval_summary": entry("summary", {"metrics/crossval": f"dir-{data}.dir"}, {"crossval.json": f"cv-{data}"}),
        "export": entry(
            "export", {"model.pt": model, "clean.parquet": f"clean-{data}"}, {"candidate": f"c-{model}.dir"}
        ),
    }


def test_parallel_folds_merge_in_dvc_yaml_order_whatever_order_they_finished() -> None:
    new = pipeline("d2")
    # the last published lock still has a fifth fold that dvc.yaml no longer has
    base = {**pipeline("d1"), "crossval@4": entry("crossval 4", {}, {"metrics/crossval/fold-4.json": "x"})}
    finished = ["crossval@1", "clean", "export", "crossval@0", "split", "crossval_summary", "train"]
    entries = latest_entries(result(name, new[name]) for name in finished)

    merged = merge(base, entries, ORDER)
    verify(merged, require=ORDER)
    assert list(merged) == ORDER
    assert merged == new
    assert list(parse(dump(merged))) == ORDER


def test_a_retried_task_counts_with_its_last_try() -> None:
    first, second = pipeline("d2", model="m-try1"), pipeline("d2", model="m-try2")
    results = [result(name, second[name]) for name in ORDER if name != "train"]
    # try 1 of train pushed its model and died before reporting; try 2 (another worker) trained again
    results += [result("train", second["train"], try_number=2), result("train", first["train"], try_number=1)]
    merged = merge({}, latest_entries(results), ORDER)
    verify(merged, require=ORDER)
    assert merged["train"]["outs"][0]["md5"] == "m-try2"

    # an export that consumed the first try's model does not fit the second try's train entry
    stale = [r for r in results if r["stage"] != "export"] + [result("export", first["export"])]
    with pytest.raises(LockMergeError, match=r"export used model.pt with hash m-try1, but train recorded m-try2"):
        verify(merge({}, latest_entries(stale), ORDER))


def test_results_of_one_try_must_agree() -> None:
    a, b = pipeline(model="a"), pipeline(model="b")
    with pytest.raises(LockMergeError, match="two results of try 1 of stage train disagree"):
        latest_entries([result("train", a["train"]), result("train", b["train"])])


def test_a_stage_restored_from_the_run_cache_merges_like_one_that_ran() -> None:
    # Another worker already ran the stages for data d2; this run restored them from DVC's run cache.
    ran = pipeline("d2")
    restored = [result(name, ran[name], outcome="restored") for name in ORDER]
    assert merge(pipeline("d1"), latest_entries(restored), ORDER) == ran
    # ...and an unchanged stage returns the entry the run started from
    unchanged = [result(name, ran[name], outcome="unchanged") for name in ORDER]
    assert merge(ran, latest_entries(unchanged), ORDER) == ran


def test_a_stage_task_checks_only_its_own_ancestors() -> None:
    # While `split` runs, the base still holds last week's entries of train and export: stale,
    # but not this task's business; the new clean entry must fit split's inputs though.
    base, new = pipeline("d1"), pipeline("d2")
    merged = merge(base, {"clean": new["clean"]}, ORDER)
    verify(merged, among=["clean"])
    with pytest.raises(LockMergeError, match="split used clean.parquet"):
        verify(merged)


def test_missing_and_unknown_stages_are_errors() -> None:
    entries = pipeline()
    del entries["export"]
    with pytest.raises(LockMergeError, match=r"no dvc.lock entry for \['export'\]"):
        verify(merge({}, entries, ORDER), require=ORDER)
    with pytest.raises(LockMergeError, match=r"dvc.yaml does not have: \['crossval@7'\]"):
        merge({}, {"crossval@7": entry("x", {}, {})}, ORDER)
    with pytest.raises(LockMergeError, match="carries no dvc.lock entry"):
        latest_entries([{"stage": "train", "lock": {}}])


def test_parse_and_dump_round_trip_a_real_dvc_lock() -> None:
    stages = parse((ROOT / "dvc.lock").read_text())
    assert "train" in stages and "crossval@0" in stages
    assert parse(dump(stages)) == stages
    assert parse("") == {} and parse(None) == {}
    with pytest.raises(LockMergeError, match="schema 2.0"):
        parse("schema: '1.0'\nstages: {}\n")


def test_the_dumped_lock_is_the_text_pure_python_yaml_writes() -> None:
    """dump uses libyaml's emitter where PyYAML has it; the committed dvc.lock must not depend on that."""
    stages = parse((ROOT / "dvc.lock").read_text())
    expected = yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False, width=100)
    assert dump(stages) == expected
