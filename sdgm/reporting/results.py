"""The results tables and figures (rule report): records -> tables -> render, and plots.

The report reads ONLY the per-run ``metrics.json`` files written by the trainer
and the paper's published numbers (``paper_numbers.yaml`` next to this file).
It never invents or fills in numbers: a missing measurement is shown as the
string ``"n/a (<reason>)"``, never 0 or blank. The only thing it takes from the
workflow config is which experiments are ablations of which main run
(``ablation_of``), to place rows in tables; what an ablation changed is read
from the runs' recorded configurations.

Tables: ``main`` (main runs and baselines), ``ablations`` (each ablation beside
its main run of the same corpus), ``reconstruction`` (embedding cosine of every
run that reconstructs). Seeds of one experiment and corpus are one row: mean ±
sample std (ddof = 1). Figures: training curves, ablation bars with the seed
spread, perplexity against the number of atoms K.

Units: ``params_m`` is ``metrics.params / 1e6``; ``peak_mem_gb`` is
``metrics.peak_mem_bytes / 1e9`` (decimal gigabytes).

The ``causal`` column comes from each run's causality audit (``metrics.causal_audit``, measured on the trained
model): "yes", or "LEAKS future tokens" when any seed failed it. A leaking row is never compared silently: its
experiment name gets " (non-causal)" and its difference to the paper reads "n/a (leaks future tokens)".

Two perplexities per split: ``val_ppl``/``test_ppl`` read the split in windows of L
that each start without context, the same for every model; ``val_ppl_mem``/
``test_ppl_mem`` carry a stateful model's state (LSTM hidden state, Transformer-XL
memory) from window to window, and are n/a for models without state.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..common.atomic import no_links_below
from .plots import plot_ablations, plot_sweep, plot_training_curves
from .records import PAPER_PATH, load_metrics, load_paper
from .render import write_table
from .tables import ablation_table, main_table, reconstruction_table

CAPTION = (
    "Measured results (mean ± sample std over seeds) beside the numbers published in "
    "{source}. The paper does not state on which corpus its efficiency, reconstruction and "
    "ablation numbers were taken; they are shown beside our WikiText-2 runs. "
    "val_ppl and test_ppl: windows of L tokens, each without earlier context, for every model; "
    "val_ppl_mem and test_ppl_mem: the model's state (hidden state, memory) carried across windows. "
    "_diff: ours minus the paper's. "
    "n/a marks a missing value, with its reason. Rows marked (non-causal) failed the causality audit "
    "(their predictions see later tokens) and are not compared."
)
ABLATION_CAPTION = (
    "Ablations (mean ± sample std over seeds): what each changes relative to its main run, read "
    "from the runs' recorded configurations; _diff: ours minus the paper's; _vs_main: the ablation "
    "minus the main run of the same corpus (ours: means over seeds; _paper: the paper's two "
    "numbers). The paper's ablation numbers are shown beside our WikiText-2 runs ({source}). "
    "Rows marked (non-causal) failed the causality audit and are not compared with the paper."
)
RECONSTRUCTION_CAPTION = (
    "Embedding reconstruction: mean over all validation (test) tokens of the cosine between "
    "the reconstruction and the input embedding, mean ± sample std over seeds, beside "
    "{source}; _diff: ours minus the paper's. Rows marked (non-causal) are not compared."
)


def _paper_source(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return str(data.get("source", "the SDGM paper"))
    except Exception:  # load_paper already validated; be lenient for the caption only
        return "the SDGM paper"


def build_report(
    metrics_paths, tables_dir, figures_dir, paper_path=None, ablations: dict[str, str] | None = None
) -> dict:
    """Write the tables ``main``, ``ablations`` and ``reconstruction`` (.csv, .md, .tex) to ``tables_dir`` and the
    figures ``training_curves`` (main runs), ``ablations`` and ``ppl_vs_atoms`` (.png, .pdf) to ``figures_dir``.
    ``ablations``: {ablation experiment: its main experiment} (sdgm.harness.config.ablations); None: no ablations.
    A folder that is, or holds, a symbolic link is refused (sdgm.common.atomic.UnsafePath) before anything is written.
    Returns {"<name>_<ext>": path}."""
    paper_path = Path(paper_path) if paper_path is not None else PAPER_PATH
    ablations = dict(ablations or {})
    records = load_metrics(list(metrics_paths))
    paper = load_paper(paper_path)
    source = _paper_source(paper_path)
    tables, figures = Path(tables_dir), Path(figures_dir)
    for folder in (tables, figures):  # a link committed into a results folder would take the writes elsewhere
        no_links_below(folder.parent, folder)
    # every table is computed before anything is written: a bad input leaves no partial report
    dfs = {
        "main": (main_table(records, paper, ablations), CAPTION),
        "ablations": (ablation_table(records, paper, ablations), ABLATION_CAPTION),
        "reconstruction": (reconstruction_table(records, paper, ablations), RECONSTRUCTION_CAPTION),
    }
    written = {}
    for name, (df, caption) in dfs.items():
        for path in write_table(df, tables / name, caption.format(source=source)):
            written[f"{name}_{path.suffix[1:]}"] = path
    main_records = [r for r in records if r["experiment"] not in ablations]
    for name, paths in (
        ("training_curves", plot_training_curves(main_records, figures / "training_curves")),
        ("ablations", plot_ablations(records, ablations, figures / "ablations", paper)),
        ("ppl_vs_atoms", plot_sweep(records, ablations, "n_atoms", figures / "ppl_vs_atoms", "number of atoms K")),
    ):
        for path in paths:
            written[f"{name}_{path.suffix[1:]}"] = path
    return written
