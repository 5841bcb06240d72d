"""The benchmark harness (`learngene bench SUITE`), a flat recipe over a suite file:

1. train (or reuse, keyed by its config hash) the suite's ancestry;
2. extract each method's learngene once (an artifact folder keyed by the hash of the
   ancestry key, the method, its options and the ancestry data);
3. expand and fine-tune every (method, dataset, shape, seed) cell; each cell's outcome is a
   JSON file keyed by the hash of everything that determines it, so a finished cell is never
   trained again, adding a method trains only its own cells, and a suite can be run in parts;
4. collect every cached cell of the suite into <out>/results/<suite>.json (or ``results_dir``:
   benchmarks/results for the committed ones), a markdown table <suite>.md and plots
   <suite>-params.png, <suite>-epochs.png, <suite>-stored.png.

Suites are YAML files in benchmarks/suites/ (mini.yaml shows every key). The cache folder
(``out``, default runs/bench):

    runs/bench/ancestry-<preset>-<data>-<key>/   the ancestry run (same name and key as `learngene demo`)
    runs/bench/genes/<method>-<key>/             learngene artifacts
    runs/bench/<suite>/cells/<key>.json          one record per cell (trained, or skipped with a reason)
    runs/bench/results/<suite>.json, .md, -*.png the results (default ``results_dir``)

Modules: suite (suite files, keys, the cell grid), run (ancestry, learngenes, cells),
report (records, summary, JSON/markdown/plots); attpc_cnn (the CNN baseline of
``benchmarks/attpc.py``).
"""

from .report import PER_SHAPE_METHODS, RECORD_FIELDS, aggregate, machine_info, mean_std
from .run import BenchReport, bench, run_suite, train_or_reuse_ancestry
from .suite import Suite, ancestry_key, load_suite

__all__ = ["bench", "run_suite", "load_suite", "Suite", "BenchReport", "train_or_reuse_ancestry", "ancestry_key",
           "aggregate", "mean_std", "machine_info", "PER_SHAPE_METHODS", "RECORD_FIELDS"]
