//! Small, dependency-free SVG charts: horizontal bars (grouped or stacked) and a line.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const LABEL: f64 = 170.0;
const COLORS: [&str; 4] = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn legend(out: &mut String, series: &[&str], y: f64) {
    for (i, name) in series.iter().enumerate() {
        let x = LABEL + i as f64 * 150.0;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            COLORS[i % COLORS.len()],
            x + 16.0,
            y + 11.0,
            escape(name)
        );
    }
}

/// The opening of a bar chart: the title, the legend, and the scale that fits `max`.
fn bar_chart_start(title: &str, series: &[&str], height: f64, max: f64) -> (String, f64) {
    let scale = (WIDTH - LABEL - 90.0) / max.max(1e-9);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif"><text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    legend(&mut out, series, 30.0);
    (out, scale)
}

/// A row's label, right-aligned against the bars.
fn row_label(out: &mut String, label: &str, y: f64) {
    let _ = write!(
        out,
        r#"<text x="{}" y="{y}" font-size="12" text-anchor="end">{}</text>"#,
        LABEL - 8.0,
        escape(label)
    );
}

/// Rows of bars, one bar per series in each row (`None` leaves a gap).
pub fn grouped_bars(
    title: &str,
    unit: &str,
    series: &[&str],
    rows: &[(String, Vec<Option<f64>>)],
) -> String {
    let bar_h = 14.0;
    let row_h = bar_h * series.len() as f64 + 12.0;
    let height = 60.0 + row_h * rows.len() as f64 + 30.0;
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .fold(0.0_f64, f64::max);
    let (mut out, scale) = bar_chart_start(title, series, height, max);
    for (r, (label, values)) in rows.iter().enumerate() {
        let top = 55.0 + r as f64 * row_h;
        row_label(&mut out, label, top + row_h / 2.0);
        for (i, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let y = top + i as f64 * bar_h;
            let w = (v * scale).max(1.0);
            let _ = write!(
                out,
                r#"<rect x="{LABEL}" y="{y}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="11">{} {}</text>"#,
                bar_h - 2.0,
                COLORS[i % COLORS.len()],
                LABEL + w + 4.0,
                y + bar_h - 4.0,
                fmt(*v),
                unit
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

/// One bar per row, split into the series' parts.
pub fn stacked_bars(
    title: &str,
    unit: &str,
    series: &[&str],
    rows: &[(String, Vec<f64>)],
) -> String {
    let row_h = 26.0;
    let height = 60.0 + row_h * rows.len() as f64 + 20.0;
    let max = rows
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>())
        .fold(0.0_f64, f64::max);
    let (mut out, scale) = bar_chart_start(title, series, height, max);
    for (r, (label, parts)) in rows.iter().enumerate() {
        let y = 55.0 + r as f64 * row_h;
        row_label(&mut out, label, y + 14.0);
        let mut x = LABEL;
        for (i, v) in parts.iter().enumerate() {
            let w = v * scale;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="20" fill="{}"/>"#,
                COLORS[i % COLORS.len()]
            );
            x += w;
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="11">{} {unit}</text>"#,
            x + 4.0,
            y + 14.0,
            fmt(parts.iter().sum())
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Lines through (x, y) points, one per series.
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> String {
    let (w, h, left, top, bottom) = (WIDTH, 320.0, 70.0, 50.0, 40.0);
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (pw, ph) = (w - left - 30.0, h - top - bottom);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif"><text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut out, &names, 28.0);
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#555"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#555"/><text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="12" y="{}" font-size="12" transform="rotate(-90 12 {})" text-anchor="middle">{}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text><text x="{}" y="{}" font-size="11">{}</text>"##,
        top + ph,
        left + pw,
        top + ph,
        top + ph,
        left + pw / 2.0,
        h - 8.0,
        escape(x_label),
        top + ph / 2.0,
        top + ph / 2.0,
        escape(y_label),
        left - 4.0,
        top + 10.0,
        fmt(max_y),
        left + pw - 20.0,
        top + ph + 14.0,
        fmt(max_x)
    );
    for (i, (_, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    left + x / max_x * pw,
                    top + ph - y / max_y * ph
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            path.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let g = grouped_bars(
            "t<1>",
            "µs",
            &["a", "b"],
            &[("c=1".into(), vec![Some(1.0), None])],
        );
        assert!(
            g.starts_with("<svg") && g.trim_end().ends_with("</svg>") && g.contains("t&lt;1&gt;")
        );
        let s = stacked_bars("s", "ms", &["x", "y"], &[("py".into(), vec![2.0, 30.0])]);
        assert!(s.contains("32.0 ms"));
        let l = lines("l", "x", "y", &[("a", vec![(0.0, 0.0), (10.0, 5.0)])]);
        assert!(l.contains("<polyline"));
    }
}
