"""Offline checks of the chart's monitoring: the PrometheusRule alerts and the Grafana dashboard.

Every PromQL expression must parse (promql-parser, the Rust parser in a wheel, which also checks
argument types such as `rate` over a range), and every series it names must exist: either a
metric the operator or the data plane registers (read from their Rust sources, see
`rust_catalog`) or one of the few series of other projects listed in EXTERNAL_SERIES.

Used by manifests.py (`check_monitoring`); nothing here contacts a cluster or the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser as promql

# Series of other projects the alerts and the dashboard use, with where they come from.
EXTERNAL_SERIES = {
    # cert-manager's controller metrics (certificate readiness, renewal and expiry).
    "certmanager_certificate_ready_status": "cert-manager",
    "certmanager_certificate_renewal_timestamp_seconds": "cert-manager",
    "certmanager_certificate_expiration_timestamp_seconds": "cert-manager",
}

# Where each crate registers its metrics: (crate source folder, prefix of every name).
CRATES = {"vibe-operator": "operator/src", "vibe-dataplane": "dataplane/src"}

# Grafana's built-in variables, and what stands in for them when an expression is parsed.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

RUST_STRING = r'"(?:[^"\\]|\\.)*"'
REGISTER = re.compile(
    r"\.register\(\s*(" + RUST_STRING + r")\s*,\s*" + RUST_STRING + r"\s*,\s*([^;]*?)\)\s*;", re.S
)
DESCRIPTOR = re.compile(
    r"encode_descriptor\(\s*(" + RUST_STRING + r")\s*,\s*" + RUST_STRING + r"\s*,\s*[^,]+,\s*MetricType::(\w+)\s*,?\s*\)",
    re.S,
)
PREFIX = re.compile(r"Registry::with_prefix\(\s*(" + RUST_STRING + r")\s*\)")


def non_test_source(path: Path) -> str:
    """A Rust file without its trailing `#[cfg(test)]` module (the crates keep tests last);
    files that are test modules themselves are empty."""
    if path.name == "tests.rs" or "tests" in path.parts or path.name == "fixtures.rs":
        return ""
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    return text if cut < 0 else text[:cut]


def kind_of(type_text: str) -> str | None:
    for word, kind in (("Histogram", "histogram"), ("Counter", "counter"), ("Gauge", "gauge")):
        if word in type_text:
            return kind
    return None


def samples_of(name: str, kind: str) -> set[str]:
    """Series names a metric of this kind exposes in the OpenMetrics text of prometheus-client."""
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def rust_catalog(root: Path) -> tuple[dict[str, str], list[str]]:
    """Every series the Rust crates expose: sample name -> "crate metric (kind)", read from
    their `registry.register(...)` calls (the kind from the registered field's type) and their
    collectors' `encode_descriptor(..., MetricType::X)`, with the crate's registry prefix.
    Returns the catalog and the problems met (an unresolvable registration is a problem)."""
    catalog: dict[str, str] = {}
    problems: list[str] = []
    for crate, src in CRATES.items():
        files = {f: non_test_source(f) for f in sorted((root / src).rglob("*.rs"))}
        prefixes = {json.loads(m) for text in files.values() for m in PREFIX.findall(text)}
        if len(prefixes) != 1:
            problems.append(f"{crate}: expected one Registry::with_prefix in {src}, found {sorted(prefixes)}")
            continue
        prefix = prefixes.pop()
        found = 0
        for path, text in files.items():
            for literal, value in REGISTER.findall(text):
                name = json.loads(literal)
                field = re.search(r"\.(\w+)\.clone\(\)\s*,?$", value.strip())
                # The field's declaration in the struct: `pub name: Type,` on a line of its own.
                declared = field and re.finditer(
                    r"^\s*(?:pub(?:\(crate\))?\s+)?" + field.group(1) + r"\s*:\s*([^\n]+?),?\s*$", text, re.M)
                kinds = [k for k in (kind_of(d.group(1)) for d in declared or []) if k]
                kind = kinds[0] if kinds else None
                if kind is None:
                    problems.append(f"{path.relative_to(root)}: cannot tell the kind of metric {name!r} ({value.strip()})")
                    continue
                for sample in samples_of(f"{prefix}_{name}", kind):
                    catalog[sample] = f"{crate} {prefix}_{name} ({kind})"
                found += 1
            for literal, metric_type in DESCRIPTOR.findall(text):
                name = json.loads(literal)
                kind = metric_type.lower()
                for sample in samples_of(f"{prefix}_{name}", kind):
                    catalog[sample] = f"{crate} {prefix}_{name} ({kind})"
                found += 1
        if not found:
            problems.append(f"{crate}: no metric registration found in {src}")
    return catalog, problems


def series_names(expr: str) -> set[str]:
    """Metric names of every selector in a parsed PromQL expression (raises ValueError when it
    does not parse or its types do not fit)."""
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    names.add(m.value)
        return True

    promql.walk(promql.parse(expr), visit)
    return names


def expr_problems(where: str, expr: str, known: dict[str, str]) -> list[str]:
    try:
        names = series_names(expr)
    except Exception as e:  # the parser raises ValueError with the position
        return [f"{where}: PromQL does not parse: {e}"]
    if not names:
        return []
    return [f"{where}: series {n} does not exist (not registered by the operator or the data plane, "
            f"nor a known cert-manager series)" for n in sorted(names - known.keys())]


def rule_problems(rule_docs: list[dict], known: dict[str, str]) -> tuple[list[str], int]:
    """Problems of PrometheusRule objects, and how many expressions were checked."""
    problems: list[str] = []
    checked = 0
    alerts: set[str] = set()
    for doc in rule_docs:
        for group in doc.get("spec", {}).get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record") or "?"
                where = f"PrometheusRule {group.get('name')}/{name}"
                if "alert" in rule:
                    if name in alerts:
                        problems.append(f"{where}: alert name used twice")
                    alerts.add(name)
                    if "severity" not in rule.get("labels", {}):
                        problems.append(f"{where}: no severity label")
                    if not rule.get("annotations", {}).get("summary"):
                        problems.append(f"{where}: no summary annotation")
                if "for" in rule:
                    try:
                        promql.parse_duration(str(rule["for"]))
                    except Exception as e:
                        problems.append(f"{where}: `for: {rule['for']}` is not a duration: {e}")
                problems.extend(expr_problems(where, str(rule.get("expr", "")), known))
                checked += 1
    return problems, checked


def substitute(expr: str, variables: set[str]) -> tuple[str, list[str]]:
    """A Grafana query with its variables replaced so that it parses as PromQL; also returns
    the variables it uses that the dashboard does not define."""
    undefined: list[str] = []

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in variables:
            undefined.append(name)
        return ".*"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr), undefined


def dashboard_problems(text: str, known: dict[str, str]) -> tuple[list[str], int]:
    """Problems of a Grafana dashboard JSON, and how many queries were checked."""
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"dashboard: not JSON: {e}"], 0
    problems: list[str] = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"dashboard: no {key!r}")
    templating = dash.get("templating", {}).get("list", [])
    variables = {v.get("name") for v in templating}
    checked = 0
    for v in templating:
        if v.get("type") != "query":
            continue
        query = v.get("query", {})
        query = query.get("query", "") if isinstance(query, dict) else str(query)
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
        if not m:
            problems.append(f"dashboard variable {v.get('name')}: not a label_values(selector, label) query: {query!r}")
            continue
        expr, undefined = substitute(m.group(1), variables)
        problems += [f"dashboard variable {v.get('name')}: uses undefined variable ${u}" for u in undefined]
        problems += expr_problems(f"dashboard variable {v.get('name')}", expr, known)
        checked += 1
    ids: set = set()

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for panel in panels(dash.get("panels", [])):
        where = f"dashboard panel {panel.get('title')!r}"
        if panel.get("id") in ids:
            problems.append(f"{where}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"{where}: gridPos {grid} is not within 24 columns")
        for target in panel.get("targets", []):
            expr, undefined = substitute(target.get("expr", ""), variables)
            problems += [f"{where}: uses undefined variable ${u}" for u in undefined]
            problems += expr_problems(f"{where} {target.get('refId')}", expr, known)
            checked += 1
    return problems, checked


def self_test(known: dict[str, str]) -> list[str]:
    """The checks must refuse what they are there to refuse: a rule naming a series nobody
    registers (a counter without `_total`, a gauge's `_bucket`), a rule that does not parse,
    and a dashboard query naming a missing series. Returns what the checks failed to catch."""
    missed = []
    bad_rules = {
        "counter without _total": "rate(vibe_operator_reconcile_failures[5m]) > 0",
        "gauge as a histogram": "histogram_quantile(0.9, rate(vibe_dataplane_websockets_open_bucket[5m]))",
        "renamed series": "vibe_operator_instance_phases == 1",
        "does not parse": "sum(rate(vibe_operator_reconciles_total[5m])",
        "rate of an instant vector": "rate(vibe_operator_reconciles_total) > 0",
    }
    for what, expr in bad_rules.items():
        doc = {"spec": {"groups": [{"name": "g", "rules": [
            {"alert": "A", "expr": expr, "labels": {"severity": "info"}, "annotations": {"summary": "s"}}]}]}}
        if not rule_problems([doc], known)[0]:
            missed.append(f"a rule with {what} ({expr})")
    dash = {"title": "t", "uid": "u", "schemaVersion": 39, "templating": {"list": []},
            "panels": [{"id": 1, "title": "p", "gridPos": {"h": 1, "w": 1, "x": 0, "y": 0},
                        "targets": [{"refId": "A", "expr": "sum(vibe_dataplane_no_such_series)"}]}]}
    if not dashboard_problems(json.dumps(dash), known)[0]:
        missed.append("a dashboard query naming a missing series")
    good = {"spec": {"groups": [{"name": "g", "rules": [
        {"alert": "A", "expr": "sum(rate(vibe_operator_reconciles_total[5m])) > 0", "for": "5m",
         "labels": {"severity": "info"}, "annotations": {"summary": "s"}}]}]}}
    if rule_problems([good], known)[0]:
        missed.append("(a valid rule was refused)")
    return missed
