"""The comparison as lines a person reads (``cam-audit compare`` without ``--format json``)."""

from __future__ import annotations

from pipeline.scores.aggregates import MAP_WORDS, headline_metrics


def headline_lines(overall: dict) -> list[str]:
    """Each registry headline number (:func:`~pipeline.scores.aggregates.headline_metrics`: accuracy, then the
    true-class maps') before -> after (difference), over the common images."""
    lines = []
    for metric in headline_metrics():
        key, words = metric.aggregate.name, metric.aggregate.label
        label = f"{MAP_WORDS[metric.map_name]} {words}" if metric.map_name else words
        before, after = overall["baseline"].get(key, float("nan")), overall["current"].get(key, float("nan"))
        lines.append(f"  {label}: {before:.3f} -> {after:.3f} ({after - before:+.3f})")
    return lines


def render_comparison(result: dict, top: int = 5) -> str:
    """The lines a person reads: what differs in definitions, the headline deltas, who broke, which classes."""
    overall = result["overall"]
    lines = [
        f"Comparison: {result['baseline']} -> {result['current']} ({overall['images_compared']} common images, "
        f"{overall['only_in_baseline']} only in the baseline, {overall['only_in_current']} only in the current run)"
    ]
    lines += [f"  DATA: {note}" for note in result.get("data", [])]
    if result["definitions"]:
        lines.append("  DEFINITIONS CHANGED (score deltas mix the model's change with these):")
    lines += [f"    {e['choice']}: {e['baseline']!r} -> {e['current']!r}" for e in result["definitions"]]
    if "delta" in overall:
        lines += headline_lines(overall)
    lines.append(f"  {overall['broke']} images broke (right -> wrong), {overall['fixed']} fixed (wrong -> right)")
    samples = result["samples"]
    for _, row in samples[samples["change"] == "broke"].head(top).iterrows():
        lines.append(f"    broke: {row['id']} ({row['label_name']}) now predicted {row['pred_current']}")
    classes = result["classes"]
    for _, row in classes.head(top).iterrows():  # none for no common image
        if row["accuracy_delta"] < 0 or row["true_energy_lift_delta"] < 0:
            lines.append(
                f"    class {row['label_name']}: accuracy {row['accuracy_baseline']:.2f} -> {row['accuracy_current']:.2f}, "
                f"lift {row['true_energy_lift_baseline']:.2f} -> {row['true_energy_lift_current']:.2f}"
            )
    return "\n".join(lines)


def paired_test_line(name: str, test: dict) -> str:
    """One paired test: before -> after, the delta and its interval (accuracy: broke / fixed and McNemar's p)."""
    extra = (
        f", {test['broke']} broke / {test['fixed']} fixed, McNemar exact p = {test['p']:.3g}"
        if name == "accuracy"
        else ""
    )
    return (
        f"    {name}: {test['baseline']:.4f} -> {test['current']:.4f} ({test['delta']:+.4f}, "
        f"{100 * test['confidence']:.0f}% CI {test['low']:+.4f} .. {test['high']:+.4f}, n {test['n']}{extra})"
        f"{' significant' if test['significant'] else ''}"
    )


def coverage_line(found: dict) -> str:
    """Both runs' audited and skipped images, and how many of the baseline's the current run audited again."""
    current, baseline = found["current"], found["baseline"]
    return (
        f"  coverage: {current['audited']} of {current['dataset_size']} images audited, {current['skipped']} skipped "
        f"(baseline {baseline['audited']} of {baseline['dataset_size']}, {baseline['skipped']} skipped); "
        f"{found['common']} of the baseline's {baseline['audited']} audited again"
    )


def gate_line(gate: dict, min_class_images: int) -> str:
    """One gate and whether it tripped."""
    state = "TRIPPED" if gate["tripped"] else "passed"
    if gate["scope"] == "coverage":
        return (
            f"  {'GATE' if gate['tripped'] else 'gate'} {gate['metric']} {gate['threshold']}: {gate['value']:.4f} "
            f"({gate['means']}): {state}"
        )
    if gate["scope"].startswith("class "):
        return (
            f"  GATE {gate['metric']} {gate['scope']} ({gate['count']} images): drop {gate['drop']:.4f} > "
            f"{gate['max_drop']} and Holm-adjusted p = {gate['p_holm']:.3g} < {gate['alpha']} (p = {gate['p']:.3g}): "
            "TRIPPED"
        )
    if gate["scope"] == "per class":
        return (
            f"  gate {gate['metric']} per class (max drop {gate['max_drop']}, {gate['classes_tested']} classes with >= "
            f"{min_class_images} images, Holm at {gate['alpha']}): {state}"
        )
    significance = "significant" if gate.get("significant") else "not significant"
    return (
        f"  gate {gate['metric']} (max drop {gate['max_drop']}): drop {gate.get('drop', float('nan')):+.4f}, "
        f"{significance}: {state}"
    )


def render_statistics(result: dict) -> str:
    """The tests and the gates, a line each."""
    settings = result["settings"]
    lines = [
        f"  paired tests on the common images (two-sided, alpha {settings['alpha']}; bootstrap {settings['resamples']} "
        f"resamples, seed {settings['seed']}):"
    ]
    lines += [paired_test_line(name, test) for name, test in result["tests"].items()]
    if result.get("coverage"):
        lines.append(coverage_line(result["coverage"]))
    lines += [gate_line(gate, settings["min_class_images"]) for gate in result["gates"]]
    return "\n".join(lines)
