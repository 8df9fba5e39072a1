"""The ablation's report: per-run evaluation files in, RUN/report/{report.json, report.md, figures/*.png} out.

The orchestrator calls, once every run is trained and evaluated,

    write_report(run_dir, ReportInputs(arms=("vanilla", "mix", "ipt"), ipt_arms=("ipt",),
                                       baselines=("vanilla", "mix"), seeds=(1, 2, 3),
                                       tokens={"ipt": {1: RunTokens(tokens_seen, global_batch_tokens), ...}, ...},
                                       synthesis={"ipt": SynthesisCost(engine, prompt_tokens, generated_tokens,
                                                                       engine_seconds, raw_tokens, gpus)},
                                       stage_seconds={"synthesize": 812.0, ...}))  -> the report as a dict

and reads, per arm and seed (the layout tools/ablate.py makes):

    RUN/eval/<arm>/seed<S>/report.json               tools/evaluate.py --output
    RUN/eval/<arm>/seed<S>/predictions/<task>.jsonl  tools/evaluate.py --predictions-dir (same item order everywhere)
    RUN/tensorboard/<arm>-seed<S>/                   the run's training events (`lm loss validation` by iteration)

Every number in report.json comes from those files: a run's value of a task metric is the one in its report.json,
an arm's value is the mean over seeds, and only the intervals come from the per-item rows (stats.py; the rows are
checked to reproduce each run's metric first, so a stale predictions file is an error, not a quiet mismatch).
Differences are every IPT arm minus every baseline. Which metric decides a task (DECIDING) is fixed by its kind:
for multiple choice the gold option's log-likelihood margin, not its raw log-likelihood (raw likelihood moves with
familiarity with the format; the margin is what discriminates) nor accuracy (coarse at small scale); those are
reported beside it with their own verdicts.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from megatron_ipt.io.atomic import owned_path, remove_path, write_atomic, write_json_atomic
from megatron_ipt.io.inputs import InputError

from . import stats

# Which metric carries the verdict for a task of each kind (tools/evaluate.py's kinds).
DECIDING = {"multiple_choice": "gold_margin", "generation": "gold_nll", "perplexity": "nll_per_token"}
LOWER_IS_BETTER = frozenset({"gold_nll", "nll_per_token", "perplexity"})
VALIDATION_TAG, TRAINING_TAG = "lm loss validation", "lm loss"  # Megatron's names (training/callbacks/logger.py)
NOT_TESTED = "not tested (no per-item values)"
# A run's metric must equal the mean its rows give (both are the same sums, in another order).
_RTOL, _ATOL = 1e-6, 1e-9


@dataclass(frozen=True)
class RunTokens:
    """What one run trained on: tokens seen, and its global batch in tokens (the allowed spread between runs)."""

    tokens_seen: int
    global_batch_tokens: int


@dataclass(frozen=True)
class SynthesisCost:
    """What making one IPT arm's corpus cost: the engine's token counts and seconds for `raw_tokens` raw tokens
    synthesized; `gpus` the engine held (0 for a CPU engine or an HTTP server whose GPUs are not ours to count)."""

    engine: str
    prompt_tokens: int
    generated_tokens: int
    engine_seconds: float
    raw_tokens: int
    gpus: int = 0

    def __post_init__(self):
        if self.raw_tokens <= 0:
            raise ValueError(f"synthesis cost of {self.engine}: raw_tokens must be > 0, got {self.raw_tokens}")


@dataclass(frozen=True)
class ReportInputs:
    """What the orchestrator knows that the run files do not (see the module docstring)."""

    arms: Tuple[str, ...]  # the order of tables and figures
    ipt_arms: Tuple[str, ...]  # each compared with each baseline (ipt - vanilla, ipt - mix), later ones with the first
    baselines: Tuple[str, ...]  # ("vanilla", "mix"), or ("vanilla",) without a mix arm
    seeds: Tuple[int, ...]  # the same seeds for every arm: runs are paired by seed
    tokens: Mapping[str, Mapping[int, RunTokens]]  # arm -> seed -> tokens
    synthesis: Mapping[str, SynthesisCost] = field(default_factory=dict)  # per IPT arm
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # wall time per stage, where known
    resamples: int = 10_000
    bootstrap_seed: int = 0
    level: float = 0.95

    def __post_init__(self):
        unknown = [a for a in (*self.ipt_arms, *self.baselines) if a not in self.arms]
        if unknown or not self.ipt_arms or not self.baselines or not self.seeds:
            raise ValueError(f"report inputs: ipt_arms and baselines must be non-empty arms of {self.arms}")
        missing = [f"{a}/seed{s}" for a in self.arms for s in self.seeds if s not in self.tokens.get(a, {})]
        if missing:
            raise ValueError(f"report inputs: no tokens seen for {', '.join(missing)}")

    @property
    def comparisons(self) -> List[Tuple[str, str]]:
        """Each IPT arm minus each baseline, then each further IPT arm minus the first (several IPT arms compare
        synthesizers or recipes: that difference needs its own interval, not two intervals side by side)."""
        against_baselines = [(i, b) for i in self.ipt_arms for b in self.baselines]
        return against_baselines + [(i, self.ipt_arms[0]) for i in self.ipt_arms[1:]]


@dataclass(frozen=True)
class TaskRun:
    """One task in one run: its report.json entry and its per-item rows."""

    kind: str
    metrics: Dict[str, float]
    rows: List[dict]
    path: str  # the predictions file, for errors


@dataclass(frozen=True)
class Run:
    arm: str
    seed: int
    iteration: Optional[int]
    tasks: Dict[str, TaskRun]
    report_path: str


def run_eval_dir(run_dir: str, arm: str, seed: int) -> str:
    return os.path.join(run_dir, "eval", arm, f"seed{seed}")


def tensorboard_dir(run_dir: str, arm: str, seed: int) -> str:
    return os.path.join(run_dir, "tensorboard", f"{arm}-seed{seed}")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(path, None, "missing (was this run evaluated?)") from None
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"not JSON: {e.msg}") from None


def _read_rows(path: str) -> List[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise InputError(path, n, f"not JSON: {e.msg}") from None
    except FileNotFoundError:
        raise InputError(path, None, "missing (evaluate with --predictions-dir)") from None
    return rows


def collect(run_dir: str, arms, seeds) -> Dict[Tuple[str, int], Run]:
    """Every run's evaluation, checked to cover the same tasks and the same items in the same order."""
    runs, first = {}, None
    for arm in arms:
        for seed in seeds:
            directory = run_eval_dir(run_dir, arm, seed)
            report_path = os.path.join(directory, "report.json")
            report = _read_json(report_path)
            tasks = {}
            for name, task in sorted(report.get("tasks", {}).items()):
                path = os.path.join(directory, "predictions", f"{name}.jsonl")
                rows = _read_rows(path)
                if len(rows) != task["items"]:
                    raise InputError(path, None, f"{len(rows)} rows, but {report_path} says {task['items']} items")
                metrics = {k: v for k, v in task["metrics"].items() if isinstance(v, (int, float))}
                tasks[name] = TaskRun(task["kind"], metrics, rows, path)
            run = Run(arm, seed, report.get("iteration"), tasks, report_path)
            if first is None:
                first = run
            else:
                _check_same_items(first, run)
            runs[arm, seed] = run
    return runs


def _item_key(row: dict) -> tuple:
    """What identifies an item across runs (held-out documents have no id: their file and line)."""
    return row.get("path"), row.get("line"), row.get("id")


def _check_same_items(first: Run, run: Run) -> None:
    if set(run.tasks) != set(first.tasks):
        raise InputError(
            run.report_path, None, f"tasks {sorted(run.tasks)} != {sorted(first.tasks)} in {first.report_path}"
        )
    for name, task in run.tasks.items():
        ref = first.tasks[name]
        if len(task.rows) != len(ref.rows):
            raise InputError(task.path, None, f"{len(task.rows)} items, but {ref.path} has {len(ref.rows)}")
        if set(task.metrics) != set(ref.metrics):
            raise InputError(
                run.report_path,
                None,
                f"{name}: metrics {sorted(task.metrics)} != {sorted(ref.metrics)} in {first.report_path}",
            )
        if [_item_key(r) for r in task.rows] != [_item_key(r) for r in ref.rows]:
            raise InputError(
                task.path, None, f"items are not those of {ref.path} in the same order (their lines or ids differ)"
            )


def _item_values(task: TaskRun, metric: str) -> Optional[Tuple[np.ndarray, Optional[np.ndarray], bool]]:
    """(values, weights, exp transform) of one metric over the task's items, or None where rows do not carry it."""
    if task.kind == "perplexity" and metric in ("nll_per_token", "perplexity"):
        tokens = np.array([r["tokens"] for r in task.rows], dtype=np.float64)
        nll = np.array([r["nll_sum"] for r in task.rows], dtype=np.float64)
        values = np.divide(nll, tokens, out=np.zeros_like(nll), where=tokens > 0)  # weight 0 rows count for nothing
        return values, tokens, metric == "perplexity"
    if task.rows and all(isinstance(r.get(metric), (int, float)) for r in task.rows):
        return np.array([r[metric] for r in task.rows], dtype=np.float64), None, False
    return None


def _sample(runs, arm, seeds, task_name, metric) -> Optional[Tuple[stats.Sample, bool]]:
    """One arm's per-item sample of a metric over seeds, checked against each run's reported value."""
    parts = [_item_values(runs[arm, s].tasks[task_name], metric) for s in seeds]
    if any(p is None for p in parts):
        return None
    weights = None if parts[0][1] is None else np.stack([p[1] for p in parts])
    sample = stats.Sample(np.stack([p[0] for p in parts]), weights)
    transform = parts[0][2]
    per_seed = np.exp(sample.per_seed()) if transform else sample.per_seed()
    for seed, value in zip(seeds, per_seed):
        task = runs[arm, seed].tasks[task_name]
        if not math.isclose(value, task.metrics[metric], rel_tol=_RTOL, abs_tol=_ATOL):
            raise InputError(
                task.path,
                None,
                f"rows give {metric} {float(value)!r}, but the run's report.json says {task.metrics[metric]!r}",
            )
    return sample, transform


def _metric_report(runs, inputs: ReportInputs, task_name: str, metric: str, draws: Optional[stats.Draws]) -> dict:
    """Per arm: the runs' values, their mean and interval; per comparison: the paired difference and verdict."""
    higher = metric not in LOWER_IS_BETTER
    samples = {arm: _sample(runs, arm, inputs.seeds, task_name, metric) for arm in inputs.arms}
    per_item = draws is not None and all(s is not None for s in samples.values())
    out = {"higher_is_better": higher, "per_item": per_item, "arms": {}, "differences": {}}
    per_seed = {arm: [runs[arm, s].tasks[task_name].metrics[metric] for s in inputs.seeds] for arm in inputs.arms}
    resampled = {}
    for arm in inputs.arms:
        entry = {"mean": float(np.mean(per_seed[arm])), "per_seed": dict(zip(map(str, inputs.seeds), per_seed[arm]))}
        if per_item:
            sample, exp = samples[arm]
            resampled[arm] = stats.resample(sample, draws, np.exp if exp else None)
            e = stats.estimate(resampled[arm], inputs.level)
            entry.update(low=e.low, high=e.high)
        out["arms"][arm] = entry
    for a, b in inputs.comparisons:
        entry = {"a": a, "b": b, "mean": float(np.mean(np.subtract(per_seed[a], per_seed[b])))}
        if per_item:
            d = stats.difference(resampled[a], resampled[b], higher, inputs.level)
            entry.update(low=d.low, high=d.high, verdict=d.verdict)
        else:
            entry["verdict"] = NOT_TESTED
        out["differences"][f"{a} - {b}"] = entry
    return out


def _read_curves(run_dir: str, inputs: ReportInputs) -> Tuple[Optional[str], Dict[str, Dict[int, tuple]]]:
    """(tag, arm -> seed -> (iterations, values)) of the validation loss, else the training loss, else (None, {})."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for arm in inputs.arms:
        for seed in inputs.seeds:
            path = tensorboard_dir(run_dir, arm, seed)
            if os.path.isdir(path):
                acc = EventAccumulator(path, size_guidance={"scalars": 0})  # 0: keep every point
                acc.Reload()
                tags = set(acc.Tags().get("scalars", []))
                scalars[arm, seed] = {t: acc.Scalars(t) for t in (VALIDATION_TAG, TRAINING_TAG) if t in tags}
    for tag in (VALIDATION_TAG, TRAINING_TAG):
        if scalars and all(tag in s for s in scalars.values()):
            curves = {}
            for (arm, seed), s in scalars.items():
                points = sorted({e.step: e.value for e in s[tag]}.items())  # a resumed run rewrites steps: last wins
                curves.setdefault(arm, {})[seed] = (np.array([p[0] for p in points]), np.array([p[1] for p in points]))
            return tag, curves
    return None, {}


def _loss_report(tag: Optional[str], curves, inputs: ReportInputs) -> dict:
    missing = [f"{a}-seed{s}" for a in inputs.arms for s in inputs.seeds if s not in curves.get(a, {})]
    out = {"tag": tag, "runs_without_curves": missing, "arms": {}}
    for arm, seeds in curves.items():
        final = {str(s): {"iteration": int(it[-1]), "value": float(v[-1])} for s, (it, v) in seeds.items()}
        out["arms"][arm] = {"final_mean": float(np.mean([f["value"] for f in final.values()])), "per_seed": final}
    return out


def _tokens_report(inputs: ReportInputs) -> dict:
    """Tokens seen per run, and whether every run saw the same number within one global batch."""
    runs = {a: {str(s): inputs.tokens[a][s].tokens_seen for s in inputs.seeds} for a in inputs.arms}
    seen = [inputs.tokens[a][s].tokens_seen for a in inputs.arms for s in inputs.seeds]
    batch = max(inputs.tokens[a][s].global_batch_tokens for a in inputs.arms for s in inputs.seeds)
    spread = max(seen) - min(seen)
    equal = spread <= batch
    message = (
        f"tokens seen are equal within one global batch: spread {spread:,} <= {batch:,}"
        if equal
        else f"FAILED: tokens seen differ by {spread:,}, more than one global batch ({batch:,}): the arms are not "
        "at equal tokens, so their differences mix the recipe with the amount of training"
    )
    return {"runs": runs, "spread": spread, "global_batch_tokens": batch, "equal": equal, "message": message}


def _cost_report(inputs: ReportInputs) -> dict:
    """Each IPT arm's synthesis cost, and that cost scaled to one billion raw tokens with the same engine."""
    out = {}
    for arm, c in inputs.synthesis.items():
        scale = 1e9 / c.raw_tokens
        per_billion = {
            "engine_seconds": c.engine_seconds * scale,
            "prompt_tokens": c.prompt_tokens * scale,
            "generated_tokens": c.generated_tokens * scale,
        }
        if c.gpus:
            per_billion["gpu_hours"] = c.engine_seconds * c.gpus * scale / 3600.0
        out[arm] = {**asdict(c), "per_billion_raw_tokens": per_billion}
    return out


def build_report(run_dir: str, inputs: ReportInputs) -> Tuple[dict, dict]:
    """(report, curves): the report's content (report.json) and the loss curves for the figure."""
    runs = collect(run_dir, inputs.arms, inputs.seeds)
    first = runs[inputs.arms[0], inputs.seeds[0]]
    tasks = {}
    for name, task in sorted(first.tasks.items()):
        draws = (  # an empty task has nothing to resample: its means are reported without intervals
            stats.Draws(len(task.rows), len(inputs.seeds), inputs.resamples, inputs.bootstrap_seed)
            if task.rows
            else None
        )
        metrics = {m: _metric_report(runs, inputs, name, m, draws) for m in task.metrics}
        deciding = DECIDING.get(task.kind)
        tasks[name] = {
            "kind": task.kind,
            "items": len(task.rows),
            "deciding_metric": deciding if deciding in metrics else None,
            "metrics": metrics,
        }
    headline = []
    for name, task in tasks.items():
        metric = task["deciding_metric"]
        for key, d in task["metrics"][metric]["differences"].items() if metric else []:
            headline.append({"task": name, "metric": metric, "comparison": key, **d})
    tag, curves = _read_curves(run_dir, inputs)
    report = {
        "arms": list(inputs.arms),
        "ipt_arms": list(inputs.ipt_arms),
        "baselines": list(inputs.baselines),
        "comparisons": [f"{a} - {b}" for a, b in inputs.comparisons],
        "seeds": list(inputs.seeds),
        "deciding_metrics": DECIDING,
        "bootstrap": {
            "resamples": inputs.resamples,
            "seed": inputs.bootstrap_seed,
            "level": inputs.level,
            "resampled": "items and seeds" if len(inputs.seeds) > 1 else "items only (one seed)",
        },
        "verdicts": headline,
        "tasks": tasks,
        "iterations": {a: {str(s): runs[a, s].iteration for s in inputs.seeds} for a in inputs.arms},
        "loss": _loss_report(tag, curves, inputs),
        "tokens": _tokens_report(inputs),
        "synthesis_cost": _cost_report(inputs),
        "stage_seconds": dict(inputs.stage_seconds),
    }
    return report, curves


def write_report(run_dir: str, inputs: ReportInputs) -> dict:
    """Write RUN/report/report.json, report.md and figures/{validation_loss,metrics}.png; returns the report."""
    report, curves = build_report(run_dir, inputs)
    out = os.path.join(run_dir, "report")
    figures = os.path.join(out, "figures")
    os.makedirs(figures, exist_ok=True)
    written = {"metrics": _save_figure(_metrics_figure(report), os.path.join(figures, "metrics.png"))}
    loss_png = os.path.join(figures, "validation_loss.png")
    if curves:
        written["loss"] = _save_figure(_loss_figure(report, curves), loss_png)
    else:
        remove_path(loss_png)  # an earlier report's figure would show curves this report did not read
    report["figures"] = {k: os.path.relpath(v, out) for k, v in written.items()}
    write_json_atomic(os.path.join(out, "report.json"), report)
    write_atomic(os.path.join(out, "report.md"), format_markdown(report))
    return report


# --- figures (matplotlib's Figure without pyplot: headless, no global backend state) ---


def _save_figure(fig, path: str) -> str:
    tmp = owned_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise
    return path


def _seed_band(seeds: Dict[int, tuple]) -> Tuple[np.ndarray, np.ndarray]:
    """(iterations, values (seeds, iterations)) on the iterations every seed logged (runs of one schedule log alike)."""
    common = np.array(sorted(set.intersection(*(set(it.tolist()) for it, _ in seeds.values()))))
    return common, np.stack([np.interp(common, it, v) for it, v in seeds.values()])


def _loss_figure(report: dict, curves):
    """Left: each arm's loss, mean over seeds with the min-max band. Right: each arm minus the first baseline,
    where differences far smaller than the loss's own fall are visible."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax, delta = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    baseline = report["baselines"][0]
    ref = _seed_band(curves[baseline]) if baseline in curves else None
    for i, arm in enumerate(report["arms"]):
        if arm not in curves:
            continue
        steps, values = _seed_band(curves[arm])
        label = f"{arm} ({len(curves[arm])} seeds)"
        ax.plot(steps, values.mean(axis=0), color=f"C{i}", label=label)
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=f"C{i}", alpha=0.2)
        if ref is not None and arm != baseline:
            base = np.interp(steps, ref[0], ref[1].mean(axis=0))
            delta.plot(steps, values.mean(axis=0) - base, color=f"C{i}", label=label)
            delta.fill_between(steps, values.min(axis=0) - base, values.max(axis=0) - base, color=f"C{i}", alpha=0.2)
    tag = report["loss"]["tag"]
    name = tag if tag == VALIDATION_TAG else "lm loss (training; no validation logged)"
    ax.set(xlabel="iteration", ylabel=name, title=f"{name}: mean over seeds, band min-max")
    delta.axhline(0.0, color="black", linewidth=0.8)
    delta.set(xlabel="iteration", ylabel=f"minus {baseline}'s mean", title=f"{name} minus {baseline} (below 0: lower)")
    for a in (ax, delta):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return fig


def _metrics_figure(report: dict):
    """Per task, the deciding metric: top, each arm's mean and interval; bottom, each comparison's difference
    and interval against 0, colored by its verdict. Points with error bars, not bars: the axes are zoomed to the
    intervals (the arms differ by little next to the metric's size), and a bar's length would mean nothing."""
    from matplotlib.figure import Figure

    tasks = [(name, task) for name, task in report["tasks"].items() if task["metrics"]]
    keys = report["comparisons"]
    colors = {stats.BETTER: "tab:green", stats.WORSE: "tab:red"}
    level = f"{report['bootstrap']['level']:.0%}"
    fig = Figure(figsize=(4.2 * max(1, len(tasks)), 7), layout="constrained")
    for k, (name, task) in enumerate(tasks):
        top, bottom = fig.add_subplot(2, len(tasks), k + 1), fig.add_subplot(2, len(tasks), len(tasks) + k + 1)
        metric = task["deciding_metric"] or next(iter(task["metrics"]))
        m = task["metrics"][metric]
        for x, arm in enumerate(report["arms"]):
            _point(top, x, m["arms"][arm], f"C{x}")
        for x, key in enumerate(keys):
            _point(bottom, x, m["differences"][key], colors.get(m["differences"][key]["verdict"], "tab:gray"))
        direction = "higher" if m["higher_is_better"] else "lower"
        top.set_xticks(range(len(report["arms"])), report["arms"])
        top.set_title(f"{name}\n{metric} ({direction} is better), {level} interval", fontsize=9)
        bottom.axhline(0.0, color="black", linewidth=0.8)
        bottom.set_xticks(range(len(keys)), [k.replace(" - ", " −\n") for k in keys], fontsize=8)
        bottom.set_title("difference (green: better, red: worse, gray: none detected)", fontsize=8)
        for a in (top, bottom):
            a.grid(axis="y", alpha=0.3)
            a.margins(x=0.2)
    return fig


def _point(ax, x: int, entry: dict, color: str) -> None:
    """A mean with its interval as an error bar (just the point where there is no interval)."""
    yerr = [[entry["mean"] - entry["low"]], [entry["high"] - entry["mean"]]] if "low" in entry else None
    ax.errorbar([x], [entry["mean"]], yerr=yerr, fmt="o", color=color, capsize=5, markersize=7)


# --- report.md ---


def _num(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def _signed(x) -> str:
    return f"{x:+.4g}"


def _diff_cell(d: dict) -> str:
    if "low" not in d:
        return f"{_signed(d['mean'])}, {d['verdict']}"
    return f"{_signed(d['mean'])} [{_signed(d['low'])}, {_signed(d['high'])}] **{d['verdict']}**"


def _label(key: str) -> str:
    return key.replace(" - ", " − ")


def _arm_cell(a: dict) -> str:
    return f"{_num(a['mean'])} [{_num(a['low'])}, {_num(a['high'])}]" if "low" in a else _num(a["mean"])


def format_markdown(report: dict) -> str:
    keys = report["comparisons"]
    boot = report["bootstrap"]
    level = f"{boot['level']:.0%}"
    out = ["# Ablation report", ""]
    if not report["tokens"]["equal"]:
        out += [f"**{report['tokens']['message']}**", ""]
    out += [
        "## Verdict",
        "",
        f"Per task, the deciding metric's difference, mean over seeds [{level} interval] "
        f"({boot['resamples']:,} bootstrap resamples over {boot['resampled']}, paired by seed and item); the verdict "
        "is read from the interval, never from the mean alone. Arms below: mean over seeds [interval]; ↑/↓: higher/"
        "lower is better.",
        "",
        "| task | deciding metric | " + " | ".join(_label(k) for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name, task in report["tasks"].items():
        metric = task["deciding_metric"]
        if metric is None:
            cells = ["(its deciding metric is not in the runs' reports)"] * len(keys)
        else:
            cells = [_diff_cell(task["metrics"][metric]["differences"][k]) for k in keys]
        out.append(f"| {name} | {metric or DECIDING.get(task['kind'], '-')} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Deciding metrics: " + "; ".join(f"{k}: `{v}`" for k, v in report["deciding_metrics"].items()) + ". For "
        "multiple choice the margin of the gold option's log-likelihood decides, not its raw log-likelihood "
        "(`gold_loglik`, which moves with familiarity with the format) nor accuracy (coarse at this scale); both "
        "are shown below with their own verdicts.",
        "",
        f"*No difference detected at this scale* means the {level} interval contains 0 with "
        f"{len(report['seeds'])} seed(s) and each task's items: a difference smaller than about the interval's "
        "half-width may exist and go unseen. It is not evidence that the arms are equal; more seeds, more items or "
        "more tokens narrow the interval.",
    ]
    if boot["resampled"].startswith("items only"):
        out += ["", "With one seed only the items are resampled: the intervals leave out seed-to-seed variation."]
    for name, task in report["tasks"].items():
        out += ["", f"## {name} ({task['kind']}, {task['items']} items)", ""]
        out += ["| metric | " + " | ".join(report["arms"]) + " | " + " | ".join(_label(k) for k in keys) + " |"]
        out += ["|---|" + "---|" * (len(report["arms"]) + len(keys))]
        for metric, m in task["metrics"].items():
            label = f"{metric} ({'↑' if m['higher_is_better'] else '↓'})"
            label = f"**{label}, decides**" if metric == task["deciding_metric"] else label
            cells = [_arm_cell(m["arms"][a]) for a in report["arms"]] + [_diff_cell(m["differences"][k]) for k in keys]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "## Training", ""]
    loss = report["loss"]
    if loss["tag"]:
        out += [
            f"Final `{loss['tag']}` (mean over seeds): "
            + ", ".join(f"{a} {_num(v['final_mean'])}" for a, v in loss["arms"].items())
            + "."
        ]
        if loss["runs_without_curves"]:
            out += [
                "",
                "No loss curves for " + ", ".join(loss["runs_without_curves"]) + " (no events under tensorboard/).",
            ]
    else:
        out += ["No TensorBoard loss curves were found under tensorboard/."]
    out += ["", "Every arm × seed is its own TensorBoard run: `tensorboard --logdir RUN/tensorboard`.", ""]
    tokens = report["tokens"]
    out += ["| arm | " + " | ".join(f"seed {s}" for s in report["seeds"]) + " |"]
    out += ["|---|" + "---|" * len(report["seeds"])]
    out += [f"| {a} | " + " | ".join(f"{t:,}" for t in runs.values()) + " |" for a, runs in tokens["runs"].items()]
    out += ["", ("" if tokens["equal"] else "**") + tokens["message"] + ("" if tokens["equal"] else "**")]
    if report["stage_seconds"]:
        out += ["", "Wall time per stage: " + ", ".join(f"{k} {v:,.0f} s" for k, v in report["stage_seconds"].items())]
    if report["synthesis_cost"]:
        out += [
            "",
            "## What the IPT corpus cost",
            "",
            "| arm | engine | raw tokens | prompt tokens | generated tokens | engine s | per 1B raw tokens |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm, c in report["synthesis_cost"].items():
            p = c["per_billion_raw_tokens"]
            scaled = f"{p['engine_seconds'] / 3600:,.1f} engine h, {p['generated_tokens']:.3g} generated tokens"
            if "gpu_hours" in p:
                scaled += f", {p['gpu_hours']:,.1f} GPU h"
            out.append(
                f"| {arm} | {c['engine']} | {c['raw_tokens']:,} | {c['prompt_tokens']:,} | "
                f"{c['generated_tokens']:,} | {c['engine_seconds']:,.1f} | {scaled} |"
            )
    figures = report.get("figures", {})
    if figures:
        out += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in figures.items()]
    return "\n".join(out) + "\n"
