//! `report.json` (every figure), `report.md` (targets, tables, charts) and the SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::charts;

pub fn write(out: &Path, report: &Value) -> anyhow::Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    let s = &report["scenarios"];
    let mut md = String::new();
    let m = &report["machine"];
    let _ = writeln!(md, "# condo benchmark report\n");
    let _ = writeln!(
        md,
        "condo {} · {} · {} cores ({}) · {} MB RAM · Linux {} · cgroup {} · {:.0} s\n",
        report["condo_version"].as_str().unwrap_or(""),
        if report["quick"].as_bool() == Some(true) {
            "**quick sizes (CI check, not the report's figures)**"
        } else {
            "full sizes"
        },
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["memory_mb"],
        m["kernel"].as_str().unwrap_or(""),
        m["cgroup"].as_str().unwrap_or(""),
        report["duration_s"].as_f64().unwrap_or(0.0),
    );
    let _ = writeln!(md, "Every figure is a median unless named otherwise; ratios compare with a peer measured in the same run. Reproduce with `condo bench --out DIR` from a checkout (as root).\n");
    targets(&mut md, s);
    if let Some(w) = s.get("warm") {
        warm(&mut md, out, w)?;
    }
    if let Some(c) = s.get("cold") {
        cold(&mut md, out, c)?;
    }
    if let Some(c) = s.get("churn") {
        let _ = writeln!(md, "## Tenant churn\n\n{} tenants, {} requests each (the first a cold start), concurrency {}, at most {} environments.\n", c["tenants"], c["requests_per_tenant"], c["concurrency"], c["max_environments"]);
        let _ = writeln!(md, "| throughput | p50 | p99 | max | 429s | errors | peak environments | environments started | platform RSS (peak) | platform + environments memory (peak) |\n|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} MB | {} MB |\n",
            rate(&c["throughput"]),
            us(&c["latency"]["p50_us"]),
            us(&c["latency"]["p99_us"]),
            us(&c["latency"]["max_us"]),
            c["throttled_429"],
            c["errors"],
            c["peak_environments"],
            c["environments_started"],
            c["peak_platform_rss_mb"],
            c["peak_total_memory_mb"]
        );
    }
    if let Some(n) = s.get("noisy") {
        noisy(&mut md, n);
    }
    if let Some(d) = s.get("density") {
        density(&mut md, out, d)?;
    }
    std::fs::write(out.join("report.md"), md)?;
    Ok(())
}

fn noisy(md: &mut String, n: &Value) {
    let _ = writeln!(md, "## Noisy neighbour\n\nA quiet tenant sends 20 requests/s (from a client thread of its own, as a caller elsewhere would), alone and then while another tenant of the same function floods at concurrency 16; once without per-tenant caps and once with them (fair CPU between tenants and CPU placement under contention are always on). Rounds of each: {}, samples pooled. Limits: {}.\n", n["rounds"], n["limits"].as_str().unwrap_or(""));
    let _ = writeln!(
        md,
        "| limits | quiet tenant | p50 | p99 | max | count |\n|---|---|---|---|---|---|"
    );
    let runs = [("without", "without_limits"), ("with", "with_limits")];
    for (limits, run) in runs {
        for (label, key) in [
            ("alone", "quiet_solo"),
            ("beside the flood", "quiet_with_neighbour"),
        ] {
            let v = &n["runs"][run][key];
            let _ = writeln!(
                md,
                "| {limits} | {label} | {} | {} | {} | {} |",
                us(&v["p50_us"]),
                us(&v["p99_us"]),
                us(&v["max_us"]),
                v["count"]
            );
        }
    }
    md.push('\n');
    for (limits, run) in runs {
        let r = &n["runs"][run];
        let f = &r["neighbour"];
        let _ = writeln!(md, "- {limits} limits: ratios (beside / alone) p50 {}×, p99 {}×. The flood got {} answers: {} invocations served (p50 {}) and {} 429s.", r["p50_ratio"], r["p99_ratio"], rate(&f["answers_per_s"]), f["served"], us(&f["latency"]["p50_us"]), f["throttled_429"]);
    }
    md.push('\n');
}

fn us(v: &Value) -> String {
    let x = v.as_f64().unwrap_or(0.0);
    if x >= 10_000.0 {
        format!("{:.1} ms", x / 1000.0)
    } else if x >= 1000.0 {
        format!("{:.2} ms", x / 1000.0)
    } else {
        format!("{x:.0} µs")
    }
}

/// A rate as a whole number per second.
fn rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_owned(), |x| format!("{x:.0}/s"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

fn targets(md: &mut String, s: &Value) {
    let _ = writeln!(
        md,
        "## Targets\n\n| target | measured | verdict |\n|---|---|---|"
    );
    let level = |c: u64| {
        s["warm"]["levels"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["concurrency"].as_u64() == Some(c)))
    };
    if let Some(r) = level(1) {
        let overhead = r["condo"]["p50_us"].as_f64().unwrap_or(0.0)
            - r["floor"]["p50_us"].as_f64().unwrap_or(0.0);
        let _ = writeln!(md, "| warm invoke overhead at concurrency 1 (condo p50 − floor p50) ≤ 150 µs | {overhead:.0} µs | {} |", verdict(Some(overhead <= 150.0)));
    }
    if let Some(r) = level(16) {
        let (c, p) = (
            r["condo_throughput"].as_f64(),
            r["peer_throughput"].as_f64(),
        );
        let ratio = c.zip(p).map(|(c, p)| c / p.max(1e-9));
        let _ = writeln!(
            md,
            "| throughput at concurrency 16 ≥ 2× the peer's | {} | {} |",
            ratio.map_or_else(
                || format!(
                    "condo {}; peer skipped: {}",
                    rate(&r["condo_throughput"]),
                    s["warm"]["peer"]["skipped"].as_str().unwrap_or("")
                ),
                |x| format!("{x:.2}×")
            ),
            verdict(ratio.map(|x| x >= 2.0))
        );
    }
    for (rt, limit) in [("provided", 15.0), ("python", 60.0), ("nodejs", 100.0)] {
        let row = s["cold"]["runtimes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["runtime"] == rt));
        if let Some(r) = row {
            let total = r["median_ms"]["total"].as_f64().unwrap_or(0.0);
            let sandbox = r["median_ms"]["sandbox"].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| cold start {rt} ≤ {limit} ms (sandbox included) | {total:.1} ms | {} |",
                verdict(Some(total <= limit))
            );
            let _ = writeln!(
                md,
                "| sandbox setup {rt} < 5 ms | {sandbox:.2} ms | {} |",
                verdict(Some(sandbox < 5.0))
            );
        }
    }
    if let Some(c) = s.get("churn") {
        let rss = c["peak_platform_rss_mb"].as_f64().unwrap_or(0.0);
        let ok = c["errors"].as_u64() == Some(0) && rss < 300.0;
        let _ = writeln!(md, "| {}-tenant churn: no errors but 429s, platform RSS < 300 MB | {} errors, {} 429s, {rss} MB | {} |", c["tenants"], c["errors"], c["throttled_429"], verdict(Some(ok)));
    }
    if let Some(n) = s.get("noisy") {
        for (limits, run) in [("without", "without_limits"), ("with", "with_limits")] {
            let r = n["runs"][run]["p99_ratio"]
                .as_f64()
                .unwrap_or(f64::INFINITY);
            let _ = writeln!(
                md,
                "| noisy neighbour ({limits} per-tenant limits): quiet p99 ≤ 2× its solo p99 | {r:.2}× | {} |",
                verdict(Some(r <= 2.0))
            );
        }
    }
    md.push('\n');
}

fn warm(md: &mut String, out: &Path, w: &Value) -> anyhow::Result<()> {
    let _ = writeln!(md, "## Warm invoke\n\n{}. Floor: one keep-alive HTTP round trip on loopback to a server that echoes the body, with the same client. Peer: {}. Rounds: {}, each contender in turn; latencies pool the rounds' samples, throughput is the median round's.\n", w["function"].as_str().unwrap_or(""), w["peer"].as_str().map_or_else(|| format!("skipped ({})", w["peer"]["skipped"].as_str().unwrap_or("")), str::to_owned), w["rounds"]);
    let _ = writeln!(md, "| concurrency | condo p50 | p90 | p99 | max | throughput | floor p50 | floor p99 | floor throughput | peer p50 | peer p99 | peer throughput | condo/floor p50 | condo/peer throughput |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for r in w["levels"].as_array().into_iter().flatten() {
        let ratio = r["condo"]["p50_us"].as_f64().unwrap_or(0.0)
            / r["floor"]["p50_us"].as_f64().unwrap_or(1.0).max(1.0);
        let peer_ratio = r["peer_throughput"]
            .as_f64()
            .map(|p| {
                format!(
                    "{:.2}×",
                    r["condo_throughput"].as_f64().unwrap_or(0.0) / p.max(1e-9)
                )
            })
            .unwrap_or_else(|| "–".into());
        let opt = |v: &Value| if v.is_null() { "–".to_owned() } else { us(v) };
        let _ = writeln!(md, "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {ratio:.1}× | {peer_ratio} |",
            r["concurrency"], us(&r["condo"]["p50_us"]), us(&r["condo"]["p90_us"]), us(&r["condo"]["p99_us"]), us(&r["condo"]["max_us"]), rate(&r["condo_throughput"]),
            us(&r["floor"]["p50_us"]), us(&r["floor"]["p99_us"]), rate(&r["floor_throughput"]),
            opt(&r["peer"]["p50_us"]), opt(&r["peer"]["p99_us"]), rate(&r["peer_throughput"]));
        let c = r["concurrency"].as_u64().unwrap_or(0);
        let f = |v: &Value| v.as_f64().map(|x| x / 1000.0);
        rows.push((
            format!("c={c} p50"),
            vec![
                f(&r["condo"]["p50_us"]),
                f(&r["condo_std_runtime"]["p50_us"]),
                f(&r["floor"]["p50_us"]),
                f(&r["peer"]["p50_us"]),
            ],
        ));
        rows.push((
            format!("c={c} p99"),
            vec![
                f(&r["condo"]["p99_us"]),
                f(&r["condo_std_runtime"]["p99_us"]),
                f(&r["floor"]["p99_us"]),
                f(&r["peer"]["p99_us"]),
            ],
        ));
    }
    std::fs::write(
        out.join("warm.svg"),
        charts::grouped_bars(
            "Warm invoke latency (1 KB echo)",
            "ms",
            &[
                "condo",
                "condo, std-only runtime",
                "floor",
                "cargo lambda watch",
            ],
            &rows,
        ),
    )?;
    let _ = writeln!(md, "\nWithout a runtime library: {}. What remains over the floor is the platform's own share.\n", w["std_runtime_function"].as_str().unwrap_or("a std-only runtime"));
    let _ = writeln!(md, "| concurrency | condo (std-only runtime) p50 | p99 | throughput | overhead over the floor (p50) |\n|---|---|---|---|---|");
    for r in w["levels"].as_array().into_iter().flatten() {
        let overhead = r["condo_std_runtime"]["p50_us"].as_f64().unwrap_or(0.0)
            - r["floor"]["p50_us"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r["concurrency"],
            us(&r["condo_std_runtime"]["p50_us"]),
            us(&r["condo_std_runtime"]["p99_us"]),
            rate(&r["condo_std_runtime_throughput"]),
            us(&json!(overhead))
        );
    }
    let _ = writeln!(md, "\n![warm invoke latency](warm.svg)\n");
    Ok(())
}

fn cold(md: &mut String, out: &Path, c: &Value) -> anyhow::Result<()> {
    let _ = writeln!(md, "## Cold start\n\n{}. Sandbox: limits, the function's own mounts, `/tmp`, user namespace, filter, exec (the cgroup, the namespaces and the shared root come prepared). Init: runtime start to its first `/next`. The rest: the invoke itself, the function and the API.\n", c["what"].as_str().unwrap_or(""));
    let _ = writeln!(md, "| runtime | total p50 | p90 | p99 | max | sandbox | init | invoke + API | count | live environments after |\n|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for r in c["runtimes"].as_array().into_iter().flatten() {
        let ms = &r["median_ms"];
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} ms | {} ms | {} ms | {} | {} |",
            r["runtime"].as_str().unwrap_or(""),
            us(&r["total"]["p50_us"]),
            us(&r["total"]["p90_us"]),
            us(&r["total"]["p99_us"]),
            us(&r["total"]["max_us"]),
            ms["sandbox"],
            ms["init"],
            ms["invoke_and_api"],
            r["total"]["count"],
            r["live_environments_after"]
        );
        let f = |k: &str| ms[k].as_f64().unwrap_or(0.0);
        rows.push((
            r["runtime"].as_str().unwrap_or("").to_owned(),
            vec![f("sandbox"), f("init"), f("invoke_and_api")],
        ));
    }
    std::fs::write(
        out.join("cold.svg"),
        charts::stacked_bars(
            "Cold start breakdown (medians)",
            "ms",
            &["sandbox", "init", "invoke + API"],
            &rows,
        ),
    )?;
    let _ = writeln!(md, "\n![cold start breakdown](cold.svg)\n");
    Ok(())
}

fn density(md: &mut String, out: &Path, d: &Value) -> anyhow::Result<()> {
    let _ = writeln!(md, "## Density\n\n{}.\n\n| runtime | environments | memory per environment | fit in 4 GiB | platform RSS |\n|---|---|---|---|---|", d["what"].as_str().unwrap_or(""));
    let mut series = Vec::new();
    for r in d["runtimes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} MB | {} | {} MB |",
            r["runtime"].as_str().unwrap_or(""),
            r["environments"],
            r["per_environment_mb"],
            r["fit_in_4_gib"],
            r["platform_rss_mb"]
        );
        let points: Vec<(f64, f64)> = r["curve"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect();
        series.push((r["runtime"].as_str().unwrap_or(""), points));
    }
    std::fs::write(
        out.join("density.svg"),
        charts::lines(
            "Idle environments vs memory",
            "environments (one tenant each)",
            "MB",
            &series,
        ),
    )?;
    let _ = writeln!(md, "\n![density](density.svg)\n");
    Ok(())
}
