"""What a reader sees beside the tables: the collected text samples, HTML renderings of the tables for the
Snakemake report, and results/README.md.

Everything here is rendered from files the pipeline wrote (samples, tables, metrics.json, gmm.json); nothing is
computed anew, so the rendered pages always agree with the results they show.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from ..common.atomic import write_text_atomic
from ..common.missing import MODEL_NOT_RECORDED, NOT_MEASURED, na

# The sample file format of sdgm.harness.generate.write_samples: a header line, then "## MODE sample N" and its text.
HEADER = re.compile(r"^# samples from .*?: (?P<settings>prompt .*)$")
SECTION = re.compile(r"^## (?P<mode>autoregressive|gmm-coefficients) sample (?P<i>\d+)$")
MODE_TITLES = {
    "autoregressive": "autoregressive (tokens fed back one at a time)",
    "gmm-coefficients": "GMM-sampled coefficients (each new position's mixing vector drawn from the GMM)",
}
SAMPLES_SHOWN = 2  # per mode and run


def parse_samples(path: str | Path) -> dict:
    """A sample file -> {"settings": "prompt 'the', temperature 1.0, top_k off, seed 0",
    "samples": {mode: [text, ...]}}."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    m = HEADER.match(lines[0]) if lines else None
    if m is None:
        raise ValueError(f"{path}: not a sample file (first line {lines[:1]!r})")
    samples: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        s = SECTION.match(line)
        if s:
            current = []
            samples.setdefault(s.group("mode"), []).append(current)
        elif current is not None:
            current.append(line)
    return {
        "settings": m.group("settings"),
        "samples": {mode: ["\n".join(t).strip() for t in texts] for mode, texts in samples.items()},
    }


def sample_entries(sample_paths, metrics_paths) -> list[dict]:
    """One entry per (corpus, experiment), from its lowest seed: labels from metrics.json, text from the sample
    file (the two lists name the same runs in the same order). Sorted by corpus, then experiments in the order they
    first appear in the lists (the config's order, as the workflow passes them)."""
    from . import leaks, load_metrics
    from .records import experiment_order

    sample_paths, metrics_paths = list(sample_paths), list(metrics_paths)
    if len(sample_paths) != len(metrics_paths):
        raise ValueError(f"{len(sample_paths)} sample files but {len(metrics_paths)} metrics files")
    best: dict[tuple[str, str], dict] = {}
    records = load_metrics(metrics_paths)
    for sp, rec in zip(sample_paths, records):
        key = (rec["corpus"], rec["experiment"])
        seeds = best.get(key, {}).get("seeds", []) + [rec["seed"]]
        if key not in best or rec["seed"] < best[key]["seed"]:
            best[key] = {
                "corpus": rec["corpus"],
                "experiment": rec["experiment"],
                "seed": rec["seed"],
                "model": rec.get("model") or na(MODEL_NOT_RECORDED),
                "leaks": leaks(rec),
                "val_ppl": rec["metrics"].get("val_ppl"),
                "val_ppl_na": (rec.get("na") or {}).get("val_ppl", NOT_MEASURED),
                "path": str(sp),
                **parse_samples(sp),
            }
        best[key]["seeds"] = sorted(seeds)
    rank = experiment_order(records)
    return [best[k] for k in sorted(best, key=lambda k: (k[0], rank[k[1]]))]


def _label(e: dict) -> str:
    name = e["experiment"] + (" (non-causal)" if e["leaks"] else "")
    ppl = na(e["val_ppl_na"]) if e["val_ppl"] is None else f"{e['val_ppl']:.1f}"
    return f"{name}: model {e['model']}, corpus {e['corpus']}, seed {e['seed']}, validation perplexity {ppl}"


LEAK_NOTE = (
    "This model failed the causality audit: its predictions see later tokens, so its perplexity is not a "
    "language-model perplexity. Sampling feeds it only earlier tokens, which is not how it was trained."
)


def _intro(entries: list[dict], n_tokens: int | None) -> list[str]:
    settings = sorted({e["settings"] for e in entries})
    length = f"{n_tokens} new tokens each" if n_tokens else "new tokens"
    return [
        f"Generated text ({length}; sampling settings: {'; '.join(settings)}). Each model's first "
        f"{SAMPLES_SHOWN} samples per mode, from its lowest seed; every sample of every run is in "
        "results/samples/{corpus}/{run}.txt. Line breaks are the model's <eos> tokens. An experiment named "
        '"(non-causal)" failed the causality audit.'
    ]


def samples_markdown(entries: list[dict], n_tokens: int | None = None, here: str | Path = ".") -> str:
    """The page as Markdown; `here` is its directory (links to the sample files are relative to it)."""
    out = ["# Text samples", "", *_intro(entries, n_tokens)]
    corpus = None
    for e in entries:
        if e["corpus"] != corpus:
            corpus = e["corpus"]
            out += ["", f"## {corpus}"]
        out += ["", f"### {_label(e)}", ""]
        if e["leaks"]:
            out += [f"**{LEAK_NOTE}**", ""]
        seeds = ", ".join(map(str, e["seeds"]))
        out.append(f"From [`{Path(e['path']).name}`]({_rel(e['path'], here)}) (seeds: {seeds}).")
        for mode, texts in e["samples"].items():
            for i, text in enumerate(texts[:SAMPLES_SHOWN]):
                fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
                out += [
                    "",
                    f"{MODE_TITLES.get(mode, mode)}, sample {i + 1} of {len(texts)}:",
                    "",
                    f"{fence}text",
                    text,
                    fence,
                ]
    return "\n".join(out) + "\n"


# The style on one line: every page carries it (a page stands alone, opened from anywhere), written once here.
STYLE = (
    "body { font-family: sans-serif; margin: 1em; } "
    "table { border-collapse: collapse; font-size: 0.85em; } "
    "th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: right; } "
    "th { background: #eee; } "
    "td:first-child, td:nth-child(2), td:nth-child(3) { text-align: left; } "
    "pre { background: #f4f4f4; padding: 0.5em; white-space: pre-wrap; } "
    ".leak { color: #a00; font-weight: bold; }"
)
PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>\n'
    "<style>" + STYLE.replace("{", "{{").replace("}", "}}") + "</style></head>\n<body>\n{body}\n</body></html>\n"
)


def html_table(df, raw: tuple[str, ...] = ()) -> str:
    """A DataFrame as an HTML table, one row a line; every cell escaped but those of the columns in `raw`."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        rows.append(
            "<tr>" + "".join(f"<td>{r[c] if c in raw else html.escape(str(r[c]))}</td>" for c in df.columns) + "</tr>"
        )
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def samples_html(entries: list[dict], n_tokens: int | None = None) -> str:
    esc = html.escape
    body = ["<h1>Text samples</h1>", f"<p>{esc(_intro(entries, n_tokens)[0])}</p>"]
    corpus = None
    for e in entries:
        if e["corpus"] != corpus:
            corpus = e["corpus"]
            body.append(f"<h2>{esc(corpus)}</h2>")
        body.append(f"<h3>{esc(_label(e))}</h3>")
        if e["leaks"]:
            body.append(f'<p class="leak">{esc(LEAK_NOTE)}</p>')
        for mode, texts in e["samples"].items():
            for i, text in enumerate(texts[:SAMPLES_SHOWN]):
                body.append(
                    f"<p>{esc(MODE_TITLES.get(mode, mode))}, sample {i + 1} of {len(texts)}:</p><pre>{esc(text)}</pre>"
                )
    return PAGE.format(title="Text samples", body="\n".join(body))


def write_samples_pages(sample_paths, metrics_paths, md_path, html_path, n_tokens: int | None = None) -> None:
    entries = sample_entries(sample_paths, metrics_paths)
    write_text_atomic(md_path, samples_markdown(entries, n_tokens, Path(md_path).parent))
    write_text_atomic(html_path, samples_html(entries, n_tokens))


def table_html(csv_path: str | Path, html_path: str | Path, title: str) -> None:
    """One table (CSV written by the report) as an HTML page, every cell as written (no re-formatting)."""
    import pandas as pd

    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    body = f"<h1>{html.escape(title)}</h1>\n" + html_table(df)
    write_text_atomic(html_path, PAGE.format(title=html.escape(title), body=body))


# --------------------------------------------------------------------------- results/README.md

TABLES = {
    "claims": "every claim of the paper with the paper's number, ours (mean and 95 % interval over seeds), the "
    "verdict, its reason and the files behind it",
    "compact": "the paper's main table: params, WikiText-2 and PTB perplexity, speed and memory, ours ± std (paper)",
    "main": "one row per experiment and corpus (ablations in their own table): validation and test perplexity "
    "(mean ± std over seeds), parameters, reconstruction cosine, training tokens/s and peak memory, with "
    "the paper's number and the difference beside ours; `causal` says whether the trained model passed "
    "the causality audit",
    "ablations": "each SDGM ablation beside the main run of its corpus: the option it changes, validation and test "
    "perplexity (mean ± std over seeds), the paper's number and the difference, and the ablation "
    "minus the main run (ours and the paper's)",
    "reconstruction": "embedding-reconstruction cosine of every SDGM run (mean ± std over seeds) beside the paper's",
    "throughput": "training, scoring and generation tokens/s of every run, MFU, GPU memory and energy",
    "generation": "generation of every run with its own decoding (cache, or the window recompute where it has "
    "none) beside the generic window recompute: tokens/s at each batch size, prefill of a full "
    "window, time per step at positions 1, L and beyond, bytes of the decoding state",
    "scaling": "time per sequence and peak memory of one mixing layer (SDGM, GPT-2 attention, causal Linformer) "
    "at each sequence length L",
    "scaling_slopes": "log-log slopes of time per sequence against L, fitted by least squares",
    "samples": "a few generated texts per model and corpus (autoregressive and, for SDGM, from GMM-drawn "
    "coefficients), labelled with model, corpus, seed and sampling settings",
}

FIGURES = {
    "training_curves": "validation perplexity (log scale) and training next-token NLL against steps, one column "
    "per corpus, one line per run of the main experiments",
    "ablations": "validation and test perplexity of each ablation beside the main run, per corpus: bars at the "
    "mean over seeds, error bars one std, dots the seeds, red crosses the paper's numbers",
    "ppl_vs_atoms": "validation and test perplexity against the number of atoms K (log scale), mean ± std over "
    "seeds, per corpus",
    "scaling": "time per sequence and peak memory of one mixing layer against L, log-log",
    "generation_latency": "time per generation step against the position of the new token, batch 1: each "
    "model's own decoding solid, the generic window recompute dashed, the window L dotted",
    "atoms": "the learned atoms: amplitude |A| and frequency F per atom (rows, sorted by energy, highest on top) "
    "and embedding dimension (columns)",
    "atom_signals": "the highest-energy atoms S_k(t) over one window, in the dimensions where each is largest",
    "gmm_bic": "BIC of the Gaussian mixture over the mixing vectors for each number of components; the star is "
    "the mixture kept (lowest BIC)",
    "gmm_pca": "mixing vectors of validation positions on their first two principal components, coloured by the "
    "most likely mixture component, with component means and 2-std covariance ellipses",
}


def _rel(path, start) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _rebased(md_path, here) -> str:
    """A Markdown file's text with its relative links rewritten to be relative to `here` (it is embedded there)."""
    src = Path(md_path).parent

    def fix(m):
        target = m.group(1)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return m.group(0)
        return f"]({_rel(os.path.normpath(src / target), here)})"

    return re.sub(r"\]\(([^)\s]+)\)", fix, Path(md_path).read_text(encoding="utf-8"))


def _describe(name: str, known: dict) -> str:
    return known.get(name, "see the caption in the HTML report")


def results_readme(
    readme_path,
    main_md,
    tables,
    figures,
    run_figures,
    metrics_paths,
    gmm_paths,
    config_summary: dict,
    claims_md=None,
    compact_md=None,
) -> str:
    """Render results/README.md. tables/figures: paths (any extension; the name says which);
    run_figures: [(corpus, run name, [png paths])]; metrics_paths/gmm_paths: the records the numbers come from.
    claims_md/compact_md (sdgm.reporting.claims): given, the page leads with the verdicts and the compact table,
    then the figures; the wide main table is linked, not embedded."""
    from . import load_metrics

    here = Path(readme_path).parent
    records = load_metrics(metrics_paths)
    commits = sorted({str(r["provenance"].get("git_commit")) for r in records})
    devices = sorted({str(r["provenance"].get("device")) for r in records})
    stamps = sorted(str(r["provenance"]["timestamp"]) for r in records if r["provenance"].get("timestamp"))
    out = [
        "# Results",
        "",
        "Written by the pipeline (rule `results_readme`) from the files it links to; regenerate it rather than "
        "editing it. Every number comes from a run's `metrics.json` or a benchmark record, never typed in.",
        "",
        f"- experiments: {', '.join(config_summary['experiments'])}; corpora: {', '.join(config_summary['corpora'])}; "
        f"seeds: {', '.join(map(str, config_summary['seeds']))}; context length L = {config_summary['seq_len']}",
        f"- {len(records)} runs, git commit(s) {', '.join(commits)}, device(s) {', '.join(devices)}"
        + (f", finished {stamps[0]} to {stamps[-1]}" if stamps else ""),
        "",
        "## Regenerate",
        "",
        "```bash",
        "snakemake --cores all                         # config/config.yaml; add --configfile for another setup",
        "snakemake --report results/report.html        # the same tables and figures in one HTML file, captioned",
        "```",
        "",
        "## Where the numbers come from",
        "",
        "| file | what it holds |",
        "|---|---|",
        "| `runs/{corpus}/{run}/metrics.json` | everything measured for one run (perplexities, parameters, "
        "FLOPs/token, tokens/s, cosine, memory, causality audit), with the resolved config and provenance |",
        "| `runs/{corpus}/{run}/gmm.json` | the GMM over SDGM's mixing vectors: BIC grid and chosen size |",
        "| `bench/throughput/{corpus}/{run}.json`, `bench/generation/{corpus}/{run}.json`, `bench/scaling.json` "
        "| benchmark records |",
        "| `samples/{corpus}/{run}.txt` | generated text |",
        "",
        "Runs: "
        + ", ".join(
            f"[{r.get('run_id') or r['corpus'] + '/' + r['experiment']}]({_rel(r['_path'], here)})" for r in records
        ),
    ]
    if gmm_paths:
        out += [
            "",
            "GMMs: "
            + ", ".join(f"[{Path(p).parent.parent.name}/{Path(p).parent.name}]({_rel(p, here)})" for p in gmm_paths),
        ]
    table_list = ["## Tables", "", "| table | what it shows |", "|---|---|"]
    for t in [*([claims_md, compact_md] if claims_md else []), *tables]:
        name = Path(t).stem
        table_list.append(f"| [`{_rel(t, here)}`]({_rel(t, here)}) | {_describe(name, TABLES)} |")
    figure_list = ["## Figures", ""]
    for f in figures:
        name = Path(f).stem
        figure_list += [f"**{name}**: {_describe(name, FIGURES)}.", "", f"![{name}]({_rel(f, here)})", ""]
    if run_figures:
        figure_list += ["## Interpretability (SDGM runs with a GMM)", ""]
        for corpus, run, pngs in run_figures:
            figure_list += [f"### {corpus}/{run}", ""]
            for f in pngs:
                name = Path(f).stem
                figure_list += [
                    f"**{name}**: {_describe(name, FIGURES)}.",
                    "",
                    f"![{corpus}/{run} {name}]({_rel(f, here)})",
                    "",
                ]
    if claims_md:
        lead = [
            "# Results",
            "",
            out[2],
            "",
            f"What ran: {out[4][2:]}; {out[5][2:]}.",
            "",
            "## Verdicts",
            "",
            f"From [`{_rel(claims_md, here)}`]({_rel(claims_md, here)}), where each verdict "
            "has its reason and links to the files behind it; the rules are in docs/claims.md.",
            "",
            _rebased(claims_md, here).rstrip(),
            "",
            "## Main results",
            "",
            f"From [`{_rel(compact_md, here)}`]({_rel(compact_md, here)}); every column, "
            f"with the paper's number and the difference, in [`{_rel(main_md, here)}`]({_rel(main_md, here)}).",
            "",
            Path(compact_md).read_text(encoding="utf-8").rstrip(),
            "",
        ]
        out = lead + figure_list + table_list + [""] + out[7:]
    else:
        out += [
            "",
            "## Main table",
            "",
            f"From [`{_rel(main_md, here)}`]({_rel(main_md, here)}) ({TABLES['main']}).",
            "",
            Path(main_md).read_text(encoding="utf-8").rstrip(),
            "",
            *table_list,
            "",
            *figure_list,
        ]
    text = "\n".join(out).rstrip() + "\n"
    write_text_atomic(readme_path, text)
    return text
