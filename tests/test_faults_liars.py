"""Round 3 of the fault tests: records and models that lie (what each case was and is: docs/faults.md).

The misbehaving models are plug-ins (tests/liars/liars.py), installed nowhere: the folder and a distribution's metadata
in a temporary folder go on sys.path, which is all the entry-point lookup reads.
"""

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_tiny

from sdgm.campaign import archive, cli, render, store
from sdgm.common import recordcheck
from sdgm.common.atomic import UnsafePath, no_links
from sdgm.data.tokens import load_tokens, tokenize_corpus
from sdgm.harness.evaluate import evaluate, evaluate_streams
from sdgm.harness.runlock import run_lock
from sdgm.models import catalog
from sdgm.models.contract import ContractError, causal_audit, check_forward
from sdgm.models.registry import build_model

LIARS = Path(__file__).resolve().parent / "liars"
PLUGINS = {
    "peek_frequent": "PeekFrequent",
    "rewrites_input": "RewritesInput",
    "wrong_width": "WrongWidth",
    "integer_logits": "IntegerLogits",
    "nan_logits": "NaNLogits",
    "bigram": "Bigram",
}
H100 = "nvidia-h100-80gb-hbm3"
N_WORDS = 2000
TRAIN = {"seq_len": 16, "batch_size": 8, "max_steps": 4, "lr": 1e-2, "device": "cpu", "log_every_steps": 2}


@pytest.fixture
def liars(tmp_path, monkeypatch):
    """The models of tests/liars/liars.py registered under PLUGINS' names by a distribution in tmp_path."""
    info = tmp_path / "site" / "sdgm_bench_liars-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sdgm-bench-liars\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{catalog.GROUP}]\n" + "".join(f"{k} = liars:{v}\n" for k, v in PLUGINS.items())
    )
    monkeypatch.syspath_prepend(str(LIARS))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.fixture(scope="module")
def zipf_tokens(tmp_path_factory):
    """A corpus of N_WORDS words drawn by Zipf's law (12 a line); its first line lists the words by rank, so a word's
    id is its rank: ids below 20 are the 20 most frequent. Returns the tokens directory."""
    root = tmp_path_factory.mktemp("zipf")
    words = np.array([f"w{i}" for i in range(N_WORDS)])
    p = 1.0 / np.arange(1, N_WORDS + 1)
    rng = np.random.default_rng(0)
    for split, n in (("train", 1500), ("valid", 120), ("test", 120)):
        lines = [" ".join(rng.choice(words, 12, p=p / p.sum())) for _ in range(n)]
        if split == "train":
            lines.insert(0, " ".join(words))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"


def train(tokens, tmp_path, model, **opts):
    return train_tiny(tokens, tmp_path, model, "zipf", opts, **TRAIN)


# ---- A. the causality audit and the evaluation cannot be fooled --------------------------------------------------
def test_audit_catches_a_model_that_peeks_at_frequent_tokens_only(liars, zipf_tokens, tmp_path):
    """Was: random ids rarely hold one of the 20 most frequent of 2001 ids, so the peek passed and was published as
    causal. Now the audit reads the validation text and puts frequent ids after the cut."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("peek_frequent", N_WORDS + 1)
    assert not causal_audit(m, N_WORDS + 1, 16, text=valid)["passed"]
    rec = train(zipf_tokens, tmp_path, "peek_frequent")
    audit = rec["metrics"]["causal_audit"]
    assert audit["declared_causal"] and not audit["passed"] and audit["max_logit_change"] > 1e-2, audit
    assert audit["text"] == "given text" and audit["modes"] == ["eval", "train"]


def test_audit_catches_a_rare_token_peek_too(liars, zipf_tokens):
    """The other way round: a peek at the rare ids only (every id from 20 on) is caught as well."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("peek_frequent", N_WORDS + 1, peek_from=20, peek_below=N_WORDS + 1)
    assert not causal_audit(m, N_WORDS + 1, 16, text=valid)["passed"]
    causal = build_model("bigram", N_WORDS + 1)
    audit = causal_audit(causal, N_WORDS + 1, 16, text=valid)
    assert audit["passed"] and audit["max_logit_change"] == 0.0


def test_a_model_that_rewrites_its_input_is_refused_not_scored(liars, zipf_tokens, tmp_path):
    """Was: the stateful evaluation took its targets from the tensor the model rewrote, so a model that set the rare
    ids to 0 scored against mostly-0 targets. Now the model gets a copy, and a rewrite is refused in one line."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("rewrites_input", N_WORDS + 1, rare_from=20)
    with pytest.raises(
        ContractError,
        match=r"^evaluation of RewritesInput: the model changed its input tokens in "
        r"place \(\d+ of \d+ ids\); forward must not modify idx$",
    ):
        evaluate_streams(m, valid, 16, batch_size=4)
    with pytest.raises(ContractError, match="changed its input tokens in place"):
        train(zipf_tokens, tmp_path, "rewrites_input", rare_from=20)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("extra", [3, -1])
def test_logits_of_the_wrong_width_are_refused_before_training(liars, zipf_tokens, tmp_path, extra):
    """Was: V + 3 trained and published; V - 1 ended in IndexError: Target 2000 is out of bounds."""
    V = N_WORDS + 1
    with pytest.raises(
        ContractError,
        match=rf"^model 'wrong_width': logits of shape \(1, 16, {V + extra}\), "
        rf"not \(B, L, V\) = \(1, 16, {V}\)$",
    ):
        train(zipf_tokens, tmp_path, "wrong_width", extra=extra)
    assert not (tmp_path / "run" / "metrics.json").exists()
    m = build_model("wrong_width", V, extra=extra)
    with pytest.raises(ContractError, match=r"^evaluation of WrongWidth: logits of shape"):
        evaluate(m, load_tokens(zipf_tokens)[0]["valid"], 16)


@pytest.mark.parametrize(
    "model,message",
    [
        ("integer_logits", r"logits of dtype torch.int64, not a floating-point type"),
        ("nan_logits", r"\d+ of \d+ logits are NaN or infinite"),
    ],
)
def test_logits_must_be_floating_and_finite(liars, model, message):
    m = build_model(model, 30)
    with pytest.raises(ContractError, match=rf"^model '{model}': {message}$"):
        check_forward(m, torch.zeros(2, 8, dtype=torch.long), 30, f"model {model!r}")


# ---- C. links in the store ---------------------------------------------------------------------------------------
def test_a_linked_store_lock_is_not_followed(tmp_path):
    """Was: STORE/.lock linked to a file elsewhere; `campaign import` overwrote that file with the lock's JSON (the
    run lock the same). Now the lock is opened without following a link, and refused in one line."""
    from test_faults_archives import craft, published

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    st = tmp_path / "store"
    st.mkdir()
    (st / store.LOCK).symlink_to(victim)
    _, rec = published(tmp_path)
    code = cli.main(["import", str(craft(rec, tmp_path / "a.tar.gz")), "--store", str(st), "--no-render"])
    assert code == 2 and victim.read_text() == "precious\n" and not (st / H100).exists()
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "lock").symlink_to(victim)
    with pytest.raises(
        UnsafePath,
        match=r"^lock .*ck/lock is a symbolic link \(to .*victim\.txt\); refusing to "
        r"follow it \(remove the link\)$",
    ):
        with run_lock(tmp_path / "ck" / "lock", "run x"):
            pass
    (tmp_path / "ck" / "lock").unlink()
    os.link(victim, tmp_path / "ck" / "lock")  # a hard link: the same file under another name
    with pytest.raises(UnsafePath, match="has other hard links"):
        with run_lock(tmp_path / "ck" / "lock", "run x"):
            pass
    assert victim.read_text() == "precious\n"


def test_render_writes_through_no_link(tmp_path, capsys):
    """Was: STORE/cpu/tables linked to a folder elsewhere; `campaign render` wrote 22 files there. Now that device is
    not rendered (one line naming the link) and the others are; a link in place of README.md stops the render."""
    from test_faults_archives import published

    st, rec = published(tmp_path, st=tmp_path / "store")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (st / H100 / "tables").symlink_to(elsewhere)
    res = render.render_store(st)
    assert list(elsewhere.iterdir()) == [] and H100 not in res
    assert any(
        f"device {H100}: tables not rendered (UnsafePath: " in p and "is a symbolic link" in p for p in res["problems"]
    ), res["problems"]
    (st / H100 / "tables").unlink()
    (st / H100 / "figures").mkdir()
    (st / H100 / "figures" / "atoms.png").symlink_to(elsewhere / "atoms.png")  # a link inside a folder too
    assert H100 not in render.render_store(st) and not (elsewhere / "atoms.png").exists()
    (st / H100 / "figures" / "atoms.png").unlink()
    assert H100 in render.render_store(st)  # no link left: rendered
    (st / "README.md").unlink()
    (st / "README.md").symlink_to(elsewhere / "README.md")
    assert cli.main(["render", "--store", str(st)]) == 2
    assert "README.md is a symbolic link" in capsys.readouterr().err and not (elsewhere / "README.md").exists()


def test_a_link_inside_the_store_is_refused_even_when_it_stays_inside(tmp_path):
    """A device folder linked to another device's: the destination resolves inside the store, but through a link."""
    from test_faults_archives import craft, published

    st = tmp_path / "store"
    (st / "cpu").mkdir(parents=True)
    (st / H100).symlink_to(st / "cpu")
    _, rec = published(tmp_path)
    res = archive.import_archives([craft(rec, tmp_path / "a.tar.gz")], st)
    assert res["new"] == [] and f"{H100} is a symbolic link" in res["refused"][0], res
    assert list((st / "cpu").iterdir()) == []


def test_no_links_names_the_link(tmp_path):
    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "root" / "b").symlink_to(tmp_path / "root" / "a")
    inside = tmp_path / "root" / "a" / "new" / "file"
    assert no_links(tmp_path / "root", inside) == inside
    with pytest.raises(UnsafePath, match=r"root/b is a symbolic link"):
        no_links(tmp_path / "root", tmp_path / "root" / "b" / "file")
    with pytest.raises(UnsafePath, match="not under"):
        no_links(tmp_path / "root", tmp_path / "other")


# ---- B. records that contradict themselves -----------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
THROUGHPUT = REPO / "results" / "h100" / "bench" / "throughput" / "wikitext2" / "sdgm-s0.json"


def throughput(**change) -> bytes:
    """The committed throughput record of SDGM, as one of the record's run (ptb, seed 0), with `change`."""
    doc = {**json.loads(THROUGHPUT.read_text()), "corpus": "ptb", "run_id": "ptb/sdgm-s0"}
    doc["metrics"].update(change.pop("metrics", {}))
    doc.update(change)
    return json.dumps(doc).encode()


def metrics_change(**values):
    def change(rec):
        for key, v in values.items():
            if key in ("run_hash", "run_id"):
                rec[key] = v
            elif key == "audit":
                rec["metrics"]["causal_audit"].update(v)
            else:
                rec["metrics"][key] = v

    return change


QUALITY = REPO / "results" / "h100" / "quality" / "ptb" / "sdgm-s0.json"


def quality(change=lambda doc: None) -> bytes:
    """The committed quality record of SDGM on PTB, seed 0 (the record's run), with `change` applied."""
    doc = json.loads(QUALITY.read_text())
    change(doc)
    return json.dumps(doc).encode()


def free_set(*path, value):
    """A change setting sets.free.<path> (keys and list indices) to `value`."""

    def change(doc):
        node = doc["sets"]["free"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


GMM = {
    "n_vectors": 100,
    "dim": 8,
    "covariance_type": "diag",
    "components": 2,
    "bic": 1.0,
    "mean_log_likelihood": 1.0,
    "grid": [{"components": 1, "bic": 2.0}, {"components": 2, "bic": 1.0}],
}

CONTRADICTIONS = {  # was imported (and rendered as "reproduced", "causal: yes", a GPT-2 row, a run counted done)
    "ppl beside another nll": (
        dict(metrics=metrics_change(val_ppl=57.1, val_nll=9.0)),
        r"metrics.json: metrics.val_ppl 57.1 is not exp\(metrics.val_nll 9\) = 8103.08",
    ),
    "audit passed beyond its tolerance": (
        dict(metrics=metrics_change(audit={"passed": True, "max_logit_change": 3.5})),
        r"metrics.causal_audit.passed is True but its max_logit_change 3.5 is "
        r"beyond its tolerance 0.0001",
    ),
    "audit with a loose tolerance": (
        dict(metrics=metrics_change(audit={"max_logit_change": 3.5, "tolerance": 10})),
        r"metrics.causal_audit.tolerance is 10, looser than the audit's 0.0001",
    ),
    "negative GMM components": (
        dict(files={"gmm.json": json.dumps({**GMM, "components": -5, "grid": []}).encode()}),
        r"gmm.json: components is -5, not an integer >= 1",
    ),
    "GMM with an empty grid": (
        dict(files={"gmm.json": json.dumps({**GMM, "grid": []}).encode()}),
        r"gmm.json: grid is not a non-empty list of fits",
    ),
    "throughput of another run": (
        dict(files={"throughput.json": throughput(model="gpt2", experiment="gpt2", corpus="wikitext2", seed=7)}),
        r"throughput.json corpus is 'wikitext2', the manifest's is 'ptb'",
    ),
    "throughput rate 1e30": (
        dict(files={"throughput.json": throughput(metrics={"train_tokens_per_s": 1e30})}),
        r"throughput.json: metrics.train_tokens_per_s is 1e\+30; a rate is > 0",
    ),
    "throughput rate 0": (
        dict(files={"throughput.json": throughput(metrics={"score_tokens_per_s": 0})}),
        r"throughput.json: metrics.score_tokens_per_s is 0; a rate is > 0",
    ),
    "memory beyond the device": (
        dict(metrics=metrics_change(peak_mem_bytes=200 * 2**30)),
        r"metrics.json: metrics.peak_mem_bytes is 2.14748e\+11 bytes; device memory is > 0 "
        r"and at most the device's 85,899,345,920 bytes",
    ),
    "quality record of another run": (
        dict(files={"quality.json": quality(lambda d: d.update(corpus="wikitext2"))}),
        r"quality.json: corpus is 'wikitext2', the manifest's is 'ptb'",
    ),
    "quality record of another model": (
        dict(files={"quality.json": quality(lambda d: d.update(model="gpt2"))}),
        r"quality.json: model is 'gpt2', the record's is 'sdgm'",
    ),
    "not a quality record": (
        dict(files={"quality.json": throughput()}),
        r"quality.json: not a quality record \(a JSON object of kind 'quality'\)",
    ),
    "quality perplexity below 1": (
        dict(files={"quality.json": quality(free_set("stats", "reference_ppl", "value", value=0.5))}),
        r"quality.json: sets.free.stats.reference_ppl.value is 0.5; a perplexity is >= 1",
    ),
    "quality perplexity NaN": (
        dict(files={"quality.json": quality(free_set("stats", "reference_ppl", "value", value=float("nan")))}),
        r"quality.json: sets.free.stats.reference_ppl.value is nan, not a finite number",
    ),
    "quality with an NLL missing": (
        dict(files={"quality.json": quality(free_set("per_sequence", "nll", value=[1.0, 2.0]))}),
        r"quality.json: sets.free.per_sequence: nll and scored are not lists of n = 3",
    ),
    "quality yardstick NLL negative": (
        dict(
            files={
                "quality.json": quality(
                    free_set("yardsticks", "heldout", "per_sequence", "nll", value=[-1.0, 2.0, 3.0])
                )
            }
        ),
        r"quality.json: sets.free.yardsticks.heldout.per_sequence.nll holds a value that is not a finite number >= 0",
    ),
    "quality distinct-1 above 1": (
        dict(files={"quality.json": quality(free_set("stats", "distinct_1", "value", value=1.5))}),
        r"quality.json: sets.free.stats.distinct_1.value is 1.5, not a fraction in \[0, 1",
    ),
    "manifest of another run hash": (
        dict(
            manifest={"run_hash": "deadbeef", "run_id": "ptb/sdgm-s0-deadbeef"},
            metrics=metrics_change(run_hash="e4a35c74"),
        ),
        r"metrics.json run_hash is 'e4a35c74', the manifest's is 'deadbeef'",
    ),
    "run id of another run hash": (
        dict(
            manifest={"run_hash": "deadbeef", "run_id": "ptb/sdgm-s0-deadbeef"},
            metrics=metrics_change(run_id="ptb/sdgm-s0-e4a35c74"),
        ),
        r"metrics.json run_id 'ptb/sdgm-s0-e4a35c74' names run hash 'e4a35c74'",
    ),
    "manifest run id of another run": (
        dict(manifest={"run_id": "wikitext2/gpt2-s7-aaaaaaaa"}),
        r"manifest.json run_id 'wikitext2/gpt2-s7-aaaaaaaa' does not name run "
        r"ptb/sdgm-s0-aaaaaaaa",
    ),
}


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_a_record_that_contradicts_itself_is_refused_whole(tmp_path, case):
    """Each is refused at import in one line naming the record and the field, nothing of it installed; placed in
    the store by hand (a pull), `verify` names it and `render` leaves it out."""
    from test_faults_archives import craft, published

    how, named = CONTRADICTIONS[case]
    _, rec = published(tmp_path)
    dest = tmp_path / "dest"
    res = archive.import_archives([craft(rec, tmp_path / "evil.tar.gz", **how)], dest)
    assert res["new"] == [] and len(res["refused"]) == 1 and re.search(named, res["refused"][0]), res["refused"]
    assert "evil.tar.gz" in res["refused"][0] and "\n" not in res["refused"][0]
    assert not (dest / H100).exists()  # nothing half-imported
    shutil.rmtree(tmp_path / "unpacked", ignore_errors=True)
    with tarfile.open(tmp_path / "evil.tar.gz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    shutil.copytree(tmp_path / "unpacked" / "published", dest, dirs_exist_ok=True)
    problems = store.verify_store(dest)
    assert len(problems) == 1 and re.search(named, problems[0]), problems
    rendered = render.render_store(dest)
    assert any(re.search(named, p) and p.startswith("left out") for p in rendered["problems"]), rendered["problems"]


def test_the_committed_records_pass_the_validator():
    """Every committed metrics, GMM, throughput and quality record agrees with itself and physics."""
    seen = 0
    for f in sorted(REPO.glob("results/*/runs/*/*/metrics.json")):
        recordcheck.check_metrics_consistent(json.loads(f.read_text()), str(f))
        seen += 1
    for f in sorted(REPO.glob("results/*/runs/*/*/gmm.json")):
        recordcheck.check_gmm(json.loads(f.read_text()), str(f))
        seen += 1
    for f in sorted(REPO.glob("results/*/bench/throughput/*/*.json")):
        recordcheck.check_bounds(json.loads(f.read_text()), str(f))
        seen += 1
    for f in sorted(REPO.glob("results/*/quality/*/*.json")):  # each of the run whose metrics share its name
        metrics = json.loads((f.parents[2] / "runs" / f.parent.name / f.stem / "metrics.json").read_text())
        who = {k: metrics[k] for k in ("corpus", "experiment", "seed", "model")}
        recordcheck.check_quality(json.loads(f.read_text()), who, metrics, str(f))
        seen += 1
    assert seen >= 30


def test_a_consistent_record_with_every_file_is_imported(tmp_path):
    """The control: the same record with a throughput, a GMM and a quality record that agree with it goes in."""
    from test_faults_archives import craft, published

    _, rec = published(tmp_path)
    files = {"throughput.json": throughput(), "gmm.json": json.dumps(GMM).encode(), "quality.json": quality()}
    res = archive.import_archives([craft(rec, tmp_path / "good.tar.gz", files=files)], tmp_path / "dest")
    assert len(res["new"]) == 1 and res["refused"] == [], res
    assert store.verify_store(tmp_path / "dest") == []


# ---- D. archive bombs beyond bytes -------------------------------------------------------------------------------
def test_a_huge_extended_header_is_refused_before_tarfile_reads_it(tmp_path):
    """Was: a 159 KiB archive carrying a 160 MiB pax header was read whole (the import peaked at 518 MiB) and imported.
    Here 1 MiB, over the 64 KiB an extended header may hold: refused from the raw headers, nothing unpacked."""
    from test_faults_archives import craft, published, tree

    _, rec = published(tmp_path)
    arch = craft(rec, tmp_path / "ok.tar.gz")
    with tarfile.open(arch) as src, tarfile.open(tmp_path / "pax.tar.gz", "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for i, m in enumerate(src.getmembers()):
            if i == 0:
                m.pax_headers = {"comment": "x" * (1 << 20)}
            tar.addfile(m, src.extractfile(m))
    dest = tmp_path / "dest"
    res = archive.import_archives([tmp_path / "pax.tar.gz"], dest)
    assert res["new"] == [] and len(res["refused"]) == 1, res
    assert re.fullmatch(
        r".*pax\.tar\.gz: an extended header of 1,048,5\d\d bytes \(at most 65,536\); nothing unpacked",
        res["refused"][0],
    ), res["refused"]
    assert tree(dest) == {".lock"}
    assert archive.import_archives([arch], tmp_path / "dest2")["new"]  # the same record without it goes in


def test_an_archive_of_too_many_members_is_refused_before_unpacking(tmp_path):
    """Was: 30,000 empty files in a window folder were all kept (100,000 took 108 s). More than 5,000 members are
    refused before anything is unpacked."""
    from test_faults_archives import tree

    arch = tmp_path / "many.tar.gz"
    with tarfile.open(arch, "w:gz") as tar:
        for i in range(archive.MEMBER_LIMIT + 1):
            tar.addfile(tarfile.TarInfo(f"window/cpu/20261207T000000Z/f{i}"), io.BytesIO(b""))
    dest = tmp_path / "dest"
    res = archive.import_archives([arch], dest)
    assert res["refused"] == [f"{arch}: more than 5,000 members; nothing unpacked"] and tree(dest) == {".lock"}


# ---- E. one poisoned record stops every render -------------------------------------------------------------------
POISON = {
    "config.yaml of code": (
        {"config.yaml": b"!!python/object/apply:os.system ['touch PWNED']\n"},
        r"config.yaml: not a workflow config \(ConstructorError: ",
    ),
    "config.yaml not a mapping": ({"config.yaml": b"- a\n- list\n"}, r"config.yaml: not a workflow config \(a list"),
    "samples.txt not a sample file": ({"samples.txt": b"hello\n"}, r"samples.txt: not a sample file"),
}


@pytest.mark.parametrize("case", POISON)
def test_a_poisoned_record_is_refused_and_render_isolates_it(tmp_path, case, monkeypatch):
    """Was: imported, and every later render of every device ended in a traceback (or the device's samples page was
    never rendered again, "tables not rendered"). Now refused at import in one line; placed by hand, render leaves
    that record out (naming it) and renders the device from the others."""
    from test_campaign import fake_run, publish
    from test_faults_archives import craft, published

    monkeypatch.chdir(tmp_path)
    files, named = POISON[case]
    st, rec = published(tmp_path, st=tmp_path / "store")
    publish(st, fake_run(tmp_path, "ptb", "gpt2", 0))
    res = archive.import_archives([craft(rec, tmp_path / "evil.tar.gz", files=files)], tmp_path / "dest")
    assert res["new"] == [] and len(res["refused"]) == 1 and re.search(named, res["refused"][0]), res["refused"]
    with tarfile.open(tmp_path / "evil.tar.gz") as tar:  # the same record pulled into the store by hand
        tar.extractall(tmp_path / "unpacked", filter="data")
    shutil.rmtree(rec)
    shutil.copytree(tmp_path / "unpacked" / "published", st, dirs_exist_ok=True)
    out = render.render_store(st)
    assert [p for p in out["problems"] if re.search(named, p)] == out["problems"] and len(out["problems"]) == 1, out
    assert out["problems"][0].startswith(f"left out {rec}")
    assert H100 in out and "gpt2" in (st / H100 / "tables" / "main.md").read_text()
    assert "gpt2" in (st / H100 / "tables" / "samples.md").read_text()  # the samples page too
    assert not (tmp_path / "PWNED").exists() and store.verify_store(st) != []


def test_a_malformed_window_is_refused_and_render_isolates_it_and_escapes_its_text(tmp_path):
    """Was: window.json with parts "abc" was imported and stopped every render; its config text went into
    windows.md unescaped. Now refused at import; by hand, that window is left out (named) and the rest rendered,
    with text from records escaped."""
    from test_gpu_window import window_archive

    summary = {
        "schema": 1,
        "kind": "gpu_window",
        "stamp": "20260101T000000Z",
        "device": "gpu-x",
        "minutes": 10,
        "configfile": "config.yaml",
        "parts": "abc",
    }
    st = tmp_path / "store"
    res = archive.import_archives([window_archive(tmp_path / "bad.tar.gz", summary=summary)], st)
    assert res["windows"] == [] and len(res["refused"]) == 1 and "not a list of objects" in res["refused"][0], res
    evil = {
        **summary,
        "stamp": "20260102T000000Z",
        "configfile": "<script>alert(1)</script>",
        "parts": [{"part": "env", "status": "ok", "seconds": 3, "reason": "a | b\n## heading <img src=x>"}],
    }
    res = archive.import_archives([window_archive(tmp_path / "w.tar.gz", stamp="20260102T000000Z", summary=evil)], st)
    assert res["refused"] == [] and len(res["windows"]) == 1
    bad = st / "gpu-x" / "windows" / "20260101T000000Z"
    bad.mkdir()
    (bad / "window.json").write_text(json.dumps(summary))
    out = render.render_store(st)
    assert len(out["problems"]) == 1 and out["problems"][0].startswith(
        f"left out window {bad}: window.json unusable"
    ), out
    page = (st / "gpu-x" / "windows.md").read_text()
    assert "&lt;script>alert(1)&lt;/script>" in page and "<script" not in page and "<img" not in page
    assert "| env | ok | 3 |  | a &#124; b ## heading &lt;img src=x> |" in page


# ---- F. config and interruption ----------------------------------------------------------------------------------
def test_a_seed_beyond_numpys_range_is_refused_by_the_config_check():
    """Was: seeds [4294967296] passed the check and training died in numpy ("Seed must be between 0 and 2**32 - 1")."""
    from helpers import mutate

    from sdgm.harness.config import ConfigError, check_config

    check_config(mutate("seeds", [0, 2**32 - 1]))
    with pytest.raises(
        ConfigError,
        match=r"^invalid config at seeds\.0: 4294967296 is greater than the maximum of "
        r"4294967295$",
    ):
        check_config(mutate("seeds", [2**32]))


def test_an_interrupted_render_says_so(tmp_path, monkeypatch, capsys):
    """Was: Ctrl-C in the middle of `render` left main.csv new and claims.csv, the throughput table and the README old,
    and nothing said so. RENDER.json says "in progress" until every output is written, then lists their digests;
    `verify` names a render that did not finish, and any output changed since the last complete one."""
    from test_campaign import fake_run, publish
    from test_faults_archives import published

    import sdgm.reporting.claims as claims_module

    st, _ = published(tmp_path, st=tmp_path / "store")
    render.render_store(st)
    assert render.check_render(st) == [] and cli.main(["verify", "--store", str(st)]) == 0
    publish(st, fake_run(tmp_path, "ptb", "gpt2", 0))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(claims_module, "build_claims", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render.render_store(st)
    assert "gpt2" in (st / H100 / "tables" / "main.md").read_text()  # new, beside the old claims and README
    assert render.check_render(st) == [
        f"{st}: the last render did not finish (interrupted?): its tables, claims "
        f"and README may come from two renders; render again"
    ]
    capsys.readouterr()
    assert cli.main(["verify", "--store", str(st)]) == 1 and "did not finish" in capsys.readouterr().err
    monkeypatch.undo()
    render.render_store(st)
    assert render.check_render(st) == []
    (st / H100 / "tables" / "main.csv").write_text("edited\n")
    assert render.check_render(st) == [
        f"{st / H100 / 'tables' / 'main.csv'}: changed since render "
        f"{json.loads((st / 'RENDER.json').read_text())['render']}; render again"
    ]


def test_the_report_refuses_a_metrics_file_that_contradicts_itself(tmp_path):
    """The report's loading path (tables, claims) uses the same validator: val_ppl 57.1 beside val_nll 9.0 was read
    and judged "reproduced"."""
    from helpers import metrics_record, write_metrics

    from sdgm.reporting import ReportError, load_metrics

    rec = metrics_record("sdgm", "ptb", 0, 57.1)
    assert load_metrics([write_metrics(tmp_path / "ok", rec)])
    rec["metrics"]["val_nll"] = 9.0
    path = write_metrics(tmp_path / "bad", rec)
    with pytest.raises(
        ReportError,
        match=rf"^{re.escape(str(path))}: metrics.val_ppl 57.1 is not "
        rf"exp\(metrics.val_nll 9\) = 8103.08$",
    ):
        load_metrics([path])


def test_tables_of_a_results_folder_are_not_written_through_a_link(tmp_path):
    """A results folder (results/cpu is committed) whose tables/ is a link to a folder elsewhere: the report and the
    claims refuse before writing anything there."""
    from helpers import metrics_record, write_metrics

    from sdgm.reporting import build_report
    from sdgm.reporting.claims import build_claims

    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_metrics(results, metrics_record("sdgm", "ptb", 0, 150.0))
    (results / "tables").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match=r"results/tables is a symbolic link"):
        build_report([path], results / "tables", results / "figures")
    with pytest.raises(UnsafePath, match=r"results/tables is a symbolic link"):
        build_claims(results / "tables", metrics=[path])
    assert list(elsewhere.iterdir()) == []
    (results / "tables").unlink()
    assert build_claims(results / "tables", metrics=[path]) and build_report(
        [path], results / "tables", results / "figures"
    )
