"""The engines that run the data stages (clean, split): `local` works through the table in one
process in bounded memory; `spark` hands the same work to Apache Spark's executors. Both cut the
source into the same units (`pipeline.units`), run the same code on each unit and write the same
parts (`pipeline.parts`), so nothing downstream knows which one ran.

clean: `inspect` (first pass), `duplicates`, `verdict`, `write` (second pass), `outputs`; `local`
and `spark` run them. split: `pipeline.stratify` (the assignment both engines compute),
`split_local` and `spark_split`.
"""
