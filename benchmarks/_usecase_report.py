"""Summaries over seeds and the Markdown report of ``bench_usecases.py``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from _common import table

SCALARS = (
    "accuracy",
    "balanced_accuracy",
    "loss",
    "auroc",
    "pr_auc",
    "prevalence",
    "recall_at_false_alarm",
)
LABELS = {
    "local_only": "local-only (mean over devices)",
    "fedavg": "federated FedAvg",
    "fedadam": "federated FedAdam",
    "fedavg_long": "federated FedAvg, 200 rounds",
    "fedadam_long": "federated FedAdam, 200 rounds",
    "fedavg_dp": "FedAvg + central DP",
    "fedadam_dp": "FedAdam + central DP",
    "fedavg_dp_k20": "FedAvg + central DP, 20 per round",
    "centralised": "centralised (pooled, upper bound)",
}


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.array(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sd, min and max over seeds of every method's metrics (recall per class too)."""
    out: dict[str, Any] = {}
    for method in LABELS:
        runs = [s[method] for s in per_seed if method in s]
        if not runs:
            continue
        entry: dict[str, Any] = {
            k: _stats([r[k] for r in runs])
            for k in SCALARS
            if k in runs[0] and runs[0][k] is not None
        }
        rec = np.array([[np.nan if v is None else v for v in r["recall"]] for r in runs])
        entry["recall"] = {
            "mean": [None if math.isnan(v) else float(v) for v in np.nanmean(rec, axis=0)],
            "sd": [float(v) for v in np.nan_to_num(np.nanstd(rec, axis=0, ddof=1))],
        }
        if "model" in runs[0]:
            entry["models"] = [r["model"] for r in runs]
        if "dp" in runs[0]:
            entry["dp"] = runs[0]["dp"] | {
                "epsilon": [r["dp"]["epsilon"] for r in runs],
                "rounds": [r["dp"]["rounds"] for r in runs],
            }
        if "curve" in runs[0]:
            rounds = [c["round"] for c in runs[0]["curve"]]
            entry["curve"] = [
                {
                    "round": rnd,
                    "balanced_accuracy": float(
                        np.mean([r["curve"][i]["balanced_accuracy"] for r in runs])
                    ),
                }
                for i, rnd in enumerate(rounds)
                if all(i < len(r["curve"]) for r in runs)
            ]
        out[method] = entry
    return out


def pm(stat: dict[str, float] | None, digits: int = 3) -> str:
    """``mean ± sd`` of a summarised metric."""
    if stat is None:
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _recall(entry: dict[str, Any]) -> str:
    return " / ".join("–" if v is None else f"{v:.2f}" for v in entry["recall"]["mean"])


def _headline(tasks: list[dict[str, Any]]) -> list[str]:
    methods = (
        "local_only",
        "fedavg",
        "fedadam",
        "fedavg_long",
        "fedadam_long",
        "fedavg_dp",
        "fedadam_dp",
        "centralised",
    )
    rows = []
    for t in tasks:
        m = t["methods"]
        rows.append(
            [f"{t['task']} ({t['train_devices']}+{t['test_devices']})"]
            + [pm(m[k]["balanced_accuracy"]) if k in m else "–" for k in methods]
        )
    heads = ["task (train+held-out devices)", "local-only", "FedAvg", "FedAdam"]
    heads += ["FedAvg 200 r", "FedAdam 200 r"]
    heads += [f"FedAvg+DP ε={tasks[0]['methods']['fedavg_dp']['dp']['target_epsilon']:g}"]
    heads += ["FedAdam+DP", "centralised"]
    return ["```", table(heads, rows), "```", ""]


def _task_section(t: dict[str, Any]) -> list[str]:
    lines = [f"### {t['task']}: {t['description']}", ""]
    binary = len(t["classes"]) == 2
    pos = f", {t['test_positives']} positive" if binary else ""
    lines += [
        f"{t['train_devices']} training devices ({t['devices_per_round']} per round), "
        f"{t['test_devices']} held-out devices ({t['test_windows']} windows{pos}); "
        f"classes: {', '.join(t['classes'])}; local-only and centralised train "
        f"{t['local_epochs']} epochs",
        "",
    ]
    heads = ["method", "accuracy", "balanced acc", "loss", "recall per class"]
    if binary:
        heads += ["AUROC", "PR-AUC", "recall @5% FA"]
    rows = []
    for key, label in LABELS.items():
        if key not in t["methods"]:
            continue
        e = t["methods"][key]
        row = [label, pm(e["accuracy"]), pm(e["balanced_accuracy"]), pm(e["loss"]), _recall(e)]
        if binary:
            row += [pm(e.get("auroc")), pm(e.get("pr_auc")), pm(e.get("recall_at_false_alarm"))]
        rows.append(row)
    lines += ["```", table(heads, rows), "```", ""]
    if binary:
        prevalence = t["methods"]["fedavg"]["prevalence"]["mean"]
        lines += [f"PR-AUC of a random score = prevalence = {prevalence:.3f}.", ""]
    fa, fm = t["methods"]["fedavg"], t["methods"]["fedadam"]
    same = [a == b for a, b in zip(fa["models"], fm["models"], strict=True)]
    lines += [
        f"Final models (sha256 of the float32 parameters, per seed): FedAvg "
        f"{', '.join(fa['models'])}; FedAdam {', '.join(fm['models'])}"
        + (" — IDENTICAL" if any(same) else " (all different)."),
        "",
    ]
    return lines


def _dp_table(tasks: list[dict[str, Any]]) -> list[str]:
    rows = []
    for t in tasks:
        for key in ("fedavg_dp", "fedavg_dp_k20", "fedadam_dp"):
            if key not in t["methods"]:
                continue
            e = t["methods"][key]
            dp = e["dp"]
            plain = t["methods"]["fedadam" if key == "fedadam_dp" else "fedavg"]
            rows.append(
                [
                    t["task"],
                    LABELS[key].replace("central DP", "DP"),
                    str(dp["fleet_size"]),
                    str(dp["devices_per_round"]),
                    f"{dp['sampling_rate']:.3f}",
                    f"{dp['delta']:.1e}",
                    f"{dp['noise_multiplier']:.3f}",
                    f"{dp['noise_norm']:.2f}",
                    f"{max(dp['epsilon']):.2f}",
                    f"{pm(plain['balanced_accuracy'])} → {pm(e['balanced_accuracy'])}",
                ]
            )
    heads = ["task", "run", "N", "K", "q", "δ", "z", "noise ‖·‖/round", "ε spent", "bal. acc"]
    return ["```", table(heads, rows), "```", ""]


def _bytes_table(tasks: list[dict[str, Any]]) -> list[str]:
    rows = []
    for t in tasks:
        b = t["bytes"]
        w, sec = b["wire"], b["secagg"]
        curve = {c["round"]: c["balanced_accuracy"] for c in t["methods"]["fedavg"]["curve"]}
        early = curve.get(b["early_rounds"])
        rows.append(
            [
                t["task"],
                f"{w['update_bytes'] / 1024:.1f}",
                f"{w['secagg_bytes'] / 1024:.1f} (k={w['secagg_neighbours']})",
                f"{b['mean_rounds_participated']:.1f}",
                f"{b['mean_uploaded'] / 1024:.0f}",
                f"{sec['mean_uploaded'] / 1024:.0f}",
                f"{b['mean_raw'] / 1024:.0f}",
                f"{b['uploaded_over_raw']:.2f}",
                f"{sec['uploaded_over_raw']:.2f}",
                f"{b['early_uploaded_over_raw']:.2f}",
                "–" if early is None else f"{early:.3f}",
                f"{curve.get(b['rounds'], float('nan')):.3f}",
            ]
        )
    heads = ["task", "update KiB", "SecAgg+ KiB/round", "rounds taken part", "sent KiB"]
    heads += ["SecAgg+ sent KiB", "raw KiB", "sent/raw", "SecAgg+ sent/raw"]
    heads += ["sent/raw @20 rounds", "bal. acc @20", "bal. acc @60"]
    lines = ["```", table(heads, rows), "```", ""]
    for t in tasks:
        b = t["bytes"]
        if b["uploaded_over_raw"] <= 1.0:
            continue
        w = b["wire"]
        lines += [
            f"**{t['task']} uploads {b['uploaded_over_raw']:.1f}× its raw data** "
            f"({b['secagg']['uploaded_over_raw']:.1f}× under SecAgg+). Its raw stream is small "
            f"({b['mean_raw'] / 1024:.0f} KiB per device: the samples behind its windows) while "
            f"the update message is {w['update_bytes'] / 1024:.1f} KiB "
            f"({w['parameters']:,} float32 parameters and the message's header and metadata) "
            f"and travels {b['mean_rounds_participated']:.0f} times. The upload is per round, "
            "not per byte recorded, so the ratio falls as a device records more. A user can also "
            "run fewer rounds (the '@20' column), select each device less often (a lower "
            "devices_per_round), or train a smaller model (the update is one float32 per "
            "parameter; under SecAgg+ one 32-bit masked integer per parameter, plus the key "
            "exchange).",
            "",
        ]
    return lines


def _basic_motions(r: dict[str, Any]) -> list[str]:
    rows = []
    for key in ("local_only", "fedavg", "fedadam", "centralised"):
        e = r["methods"][key]
        rows.append([LABELS[key], pm(e["accuracy"]), pm(e["balanced_accuracy"]), _recall(e)])
    return [
        f"## Real data: {r['description']}",
        "",
        f"{r['train_recordings']} training recordings dealt to {r['devices']} simulated watches "
        "by label shards (sorted by activity, cut in 20 shards of 2 recordings, 2 shards per "
        "watch: each watch holds 4 whole recordings of 1–2 activities; a recording is never "
        f"split). {r['devices_per_round']} watches per round, {r['rounds']} rounds, "
        f"B={r['batch_size']}. Scored on the {r['test_recordings']} test recordings of the UEA "
        "split (10 per activity).",
        "",
        "```",
        table(["method", "accuracy", "balanced acc", "recall per class"], rows),
        "```",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """The report: headline table, DP table, bytes, every task's detail, BasicMotions."""
    s = results["settings"]
    tasks = results["tasks"]
    lines = [
        "# Edge use cases: federated vs local-only vs centralised (held-out devices)",
        "",
        f"{s['rounds']} rounds (FedAvg and FedAdam also {s['long_rounds']}), E={s['epochs']}, "
        f"B={s['batch_size']}, lr={s['lr']}, "
        f"class-balanced local loss; {s['devices_per_round']['small']} devices per round on the "
        f"tasks' fleets, {s['devices_per_round']['large']} on the ten-times-larger `*_large` "
        f"fleets; FedAdam server lr {s['fedadam']['server_lr']}; central DP: clip "
        f"{s['clip_norm']}, ε={s['epsilon']:g} calibrated for the run, δ = 1/N^1.1, Poisson "
        f"sampling. Centralised: the pooled training windows, as many epochs as local-only, "
        f"batch {s['pooled_batch_size']} (at {s['batch_size']} the pooled run collapses on some "
        f"seeds). Mean ± sd over seeds {', '.join(map(str, s['seeds']))} (initialisation, "
        "selection, batches, DP noise; fleets and held-out devices fixed). "
        f"Run time {results['seconds'] / 60:.1f} min.",
        "",
    ]
    if tasks:
        lines += ["## Balanced accuracy on held-out devices", "", *_headline(tasks)]
        lines += [
            "## Differential privacy: what the noise costs",
            "",
            "N devices, K expected per round (q = K/N), noise multiplier z calibrated to "
            f"ε={s['epsilon']:g} at δ over the rounds; the noise on the mean update has L2 norm "
            "z·C/K·√d (d parameters) per round, against at most C = 1 for the clipped mean "
            "update itself.",
            "",
            *_dp_table(tasks),
            "## Bytes each device sent against its raw sensor data",
            "",
            "FedAvg; the measured message × rounds taken part. 'update': the update message a "
            "device posts in a plain round (fedge.device.work.make_update: the safetensors "
            "float32 delta, its metadata and the federated-evaluation sums). 'SecAgg+': all the "
            "device sends in a secure round (join with its certificate, key advertisement, "
            "encrypted shares, 32-bit masked input, unmask response), as fedge.secagg's "
            "run_secure_sum counts it for that many devices per round with the networked jobs' "
            "default settings; k = neighbours in the SecAgg+ graph. HTTP/TLS framing not "
            "counted. Raw = the sensor samples behind the device's windows (float32). '@20' "
            "stops after the first third of the rounds.",
            "",
            *_bytes_table(tasks),
            "## Per task",
            "",
        ]
        for t in tasks:
            lines += _task_section(t)
    if results.get("basic_motions"):
        lines += _basic_motions(results["basic_motions"])
    return "\n".join(lines)
