"""``hubctl bench linkage``: how well the keyed linkage finds the same person, beside a plaintext matcher.

The clinic side makes keys for every record of A and B with a fresh secret; the hub side
indexes A's keys and grades B's records against them, best candidate per record, exactly as
the hub does for a new referral. The same files go through ``recordlinkage``'s
Fellegi-Sunter (ECM) matcher on the plaintext, in the same run, so the cost of never showing
the hub a name is a ratio, not a guess.
"""

from __future__ import annotations

import csv
import hashlib
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from referral_hub.errors import HubError
from referral_hub.linkage.linkage_keys import LinkageKeys, LinkageSecret, Person, make_keys
from referral_hub.linkage.matching import LinkageIndex, MatchGrade

if TYPE_CHECKING:
    from referral_hub.cli.bench_linkage_data import LinkageFiles

REQUIRED_COLUMNS = frozenset({"id", "given_name", "family_name", "birth_date", "sex", "postcode", "address", "phone"})


class LinkageBenchError(HubError):
    """A data file the benchmark cannot read."""


def read_people(path: Path) -> dict[str, Person]:
    """Records by id from a CSV with the benchmark's header; any column but ``id`` may be empty."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = REQUIRED_COLUMNS - set(reader.fieldnames or ())
            if missing:
                msg = f"{path}: missing column(s) {', '.join(sorted(missing))}"
                raise LinkageBenchError(msg)
            return {row["id"]: Person(**{name: row[name] or "" for name in Person.__struct_fields__}) for row in reader}
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise LinkageBenchError(msg) from error


def read_truth(path: Path) -> set[tuple[str, str]]:
    """True pairs ``(a_id, b_id)``."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return {(row["a_id"], row["b_id"]) for row in csv.DictReader(handle)}
    except (OSError, KeyError) as error:
        msg = f"cannot read the truth file {path} (header a_id,b_id): {error}"
        raise LinkageBenchError(msg) from error


@dataclass(frozen=True, slots=True)
class Scores:
    """Precision and recall of one matcher's proposals."""

    precision: float
    recall: float
    f1: float


def scores(proposed: set[tuple[str, str]], truth: set[tuple[str, str]]) -> Scores:
    """Precision, recall and F1 of a set of proposed pairs."""
    hits = len(proposed & truth)
    precision = hits / len(proposed) if proposed else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(round(precision, 4), round(recall, 4), round(f1, 4))


@dataclass(frozen=True, slots=True)
class LinkageReport:
    """What ``hubctl bench linkage --json`` prints."""

    records_a: int
    records_b: int
    true_links: int
    precision: float
    recall: float
    f1: float
    certain_precision: float
    certain_recall: float
    review_share: float
    keys_per_s: float
    pairs_per_s: float
    match_ms_p50: float
    match_ms_p99: float
    plaintext_precision: float
    plaintext_recall: float
    plaintext_recall_at_same_precision: float
    recall_ratio: float
    precision_ratio: float


def keyed_matches(
    a: dict[str, Person], b: dict[str, Person], secret: LinkageSecret
) -> tuple[dict[tuple[str, str], MatchGrade], float, float]:
    """Best candidate per B record; also keys/s and candidate pairs/s."""
    started = time.perf_counter()
    a_keys = {record: make_keys(person, secret) for record, person in a.items()}
    b_keys = {record: make_keys(person, secret) for record, person in b.items()}
    keys_per_s = (len(a) + len(b)) / (time.perf_counter() - started)
    index = LinkageIndex()
    for record, keys in a_keys.items():
        index.add(record, keys)
    proposals: dict[tuple[str, str], MatchGrade] = {}
    lookups: list[float] = []
    compared = 0
    for record, keys in b_keys.items():
        begun = time.perf_counter()
        found = index.candidates(keys)
        lookups.append((time.perf_counter() - begun) * 1000)
        compared += len(found)
        if found and found[0].grade is not MatchGrade.CERTAINLY_NOT:
            proposals[(found[0].record, record)] = found[0].grade
    pairs_per_s = compared / (sum(lookups) / 1000) if sum(lookups) else 0.0
    return proposals, keys_per_s, pairs_per_s


def lookup_ms_at_scale(people: dict[str, Person], known: int, probes: int = 200) -> tuple[float, float]:
    """p50 and p99 of one lookup against ``known`` indexed patients (records repeated under new ids)."""
    secret = LinkageSecret.from_bytes(os.urandom(32), "bench")
    base = [make_keys(person, secret) for person in people.values()]
    index = LinkageIndex()
    for n in range(known):
        keys = base[n % len(base)]
        # Each copy gets its own tokens (as a distinct person would), so blocks stay realistic in size.
        salt = f"{n // len(base)}"
        tokens = {k: hashlib.sha256(f"{v}{salt}".encode()).hexdigest()[:32] for k, v in keys.tokens.items()}
        index.add(str(n), LinkageKeys(tokens=tokens, fields=keys.fields))
    times = []
    for keys in base[:probes]:
        begun = time.perf_counter()
        index.candidates(keys)
        times.append((time.perf_counter() - begun) * 1000)
    return statistics.median(times), statistics.quantiles(times, n=100)[98]


def plaintext_matches(files: LinkageFiles) -> dict[tuple[str, str], float]:
    """Best candidate per B record from recordlinkage's ECM matcher on the plaintext, with its probability."""
    import pandas as pd  # noqa: PLC0415 - the bench extra, imported only here
    import recordlinkage  # noqa: PLC0415 - the bench extra, imported only here

    def frame(path: Path) -> pd.DataFrame:
        data = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("id")
        for column in ("given_name", "family_name", "address"):
            data[column] = data[column].str.lower().str.strip()
        data["birth_date"] = data["birth_date"].str.replace("-", "", regex=False)
        data["phone"] = data["phone"].str.replace(r"\D", "", regex=True).str[-9:]
        return data.replace("", None)

    a, b = frame(files.a), frame(files.b)
    indexer = recordlinkage.Index()
    for column in ("given_name", "family_name", "birth_date", "postcode"):
        indexer.block(column)
    pairs = indexer.index(a, b)
    compare = recordlinkage.Compare()
    compare.string("given_name", "given_name", method="jarowinkler", threshold=0.85, label="given")
    compare.string("family_name", "family_name", method="jarowinkler", threshold=0.85, label="family")
    compare.exact("birth_date", "birth_date", label="birth")
    compare.exact("postcode", "postcode", label="postcode")
    compare.string("address", "address", method="jarowinkler", threshold=0.85, label="address")
    compare.exact("sex", "sex", label="sex")
    compare.exact("phone", "phone", label="phone")
    features = compare.compute(pairs, a, b)
    classifier = recordlinkage.ECMClassifier(binarize=None)
    classifier.fit(features)
    probabilities = classifier.prob(features)
    best: dict[str, tuple[str, float]] = {}
    for (a_id, b_id), probability in probabilities.items():
        if b_id not in best or probability > best[b_id][1]:
            best[b_id] = (a_id, float(probability))
    return {(a_id, b_id): p for b_id, (a_id, p) in best.items()}


def recall_at_precision(
    ranked: dict[tuple[str, str], float], truth: set[tuple[str, str]], precision: float
) -> tuple[float, float, float]:
    """The plaintext matcher's best recall with precision at least ``precision``, and its default (p >= 0.5) figures."""
    ordered = sorted(ranked.items(), key=lambda item: -item[1])
    hits = 0
    best = 0.0
    for n, (pair, _probability) in enumerate(ordered, start=1):
        hits += pair in truth
        if hits / n >= precision:
            best = max(best, hits / len(truth))
    default = scores({pair for pair, p in ranked.items() if p >= 0.5}, truth)  # noqa: PLR2004 - ECM's own cut
    return round(best, 4), default.precision, default.recall


def run(files: LinkageFiles, scale: int = 100_000, plot: Path | None = None) -> LinkageReport:
    """The whole comparison on one data set; with ``plot``, also the precision-recall picture as a PNG."""
    a, b, truth = read_people(files.a), read_people(files.b), read_truth(files.truth)
    secret = LinkageSecret.from_bytes(os.urandom(32), "bench")
    proposals, keys_per_s, pairs_per_s = keyed_matches(a, b, secret)
    keyed = scores(set(proposals), truth)
    certain = {pair for pair, grade in proposals.items() if grade is MatchGrade.CERTAIN}
    true_found = set(proposals) & truth
    plain = plaintext_matches(files)
    plain_recall, plain_precision, plain_default_recall = recall_at_precision(plain, truth, keyed.precision)
    p50, p99 = lookup_ms_at_scale(a, scale)
    report = LinkageReport(
        records_a=len(a),
        records_b=len(b),
        true_links=len(truth),
        precision=keyed.precision,
        recall=keyed.recall,
        f1=keyed.f1,
        certain_precision=round(len(certain & truth) / len(certain), 4) if certain else 1.0,
        certain_recall=round(len(certain & truth) / len(truth), 4) if truth else 1.0,
        review_share=round(len(true_found - certain) / len(true_found), 4) if true_found else 0.0,
        keys_per_s=round(keys_per_s),
        pairs_per_s=round(pairs_per_s),
        match_ms_p50=round(p50, 3),
        match_ms_p99=round(p99, 3),
        plaintext_precision=plain_precision,
        plaintext_recall=plain_default_recall,
        plaintext_recall_at_same_precision=plain_recall,
        recall_ratio=round(keyed.recall / plain_recall, 4) if plain_recall else 0.0,
        precision_ratio=round(keyed.precision / plain_precision, 4) if plain_precision else 0.0,
    )
    if plot is not None:
        plot_png(report, plain, truth, plot)
    return report


def as_dict(report: LinkageReport) -> dict[str, float | int]:
    """The report as plain JSON-ready values."""
    return asdict(report)


def plot_png(
    report: LinkageReport, ranked: dict[tuple[str, str], float], truth: set[tuple[str, str]], path: Path
) -> None:
    """Precision against recall of the plaintext matcher as its threshold moves, with the keyed matcher's point."""
    from referral_hub.cli import plots  # noqa: PLC0415 - matplotlib only when plotting

    plots.require_matplotlib()
    import matplotlib as mpl  # noqa: PLC0415 - the bench extra, imported only when plotting

    mpl.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415 - as above

    hits = 0
    recalls: list[float] = []
    precisions: list[float] = []
    for n, (pair, _p) in enumerate(sorted(ranked.items(), key=lambda item: -item[1]), start=1):
        hits += pair in truth
        recalls.append(hits / len(truth))
        precisions.append(hits / n)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot(recalls, precisions, label="plaintext ECM (recordlinkage), every threshold")
    axes.scatter([report.recall], [report.precision], color="C3", zorder=3, label="keyed linkage, possible or better")
    axes.scatter(
        [report.certain_recall], [report.certain_precision], color="C2", zorder=3, label="keyed linkage, certain only"
    )
    axes.set_ylim(min([0.8, report.precision, *precisions]) - 0.01, 1.005)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"{report.records_a} x {report.records_b} records, {report.true_links} true links")
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
