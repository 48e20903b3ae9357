//! Line charts drawn on the server as inline SVG (no script, no CDN, nothing the CSP would
//! refuse): presentation attributes only, no `style`. Each has a y axis with its unit (zero,
//! half and top), a time axis in UTC (an hour back to now, every 15 minutes), and, when the
//! value has one, its limit drawn as a dashed line.

/// A chart of `values` (unix seconds, value) over the `window` seconds up to `now`.
pub struct Chart<'a> {
    pub title: &'a str,
    /// The figure in words for screen readers and as the caption: "12.0 MiB now, 40.5 MiB at most".
    pub summary: String,
    /// The y axis goes up to at least this (a limit, say), so a flat line is not a full one.
    pub floor_max: f64,
    /// How values read: `bytes`, `%`, `ms`, `/min`.
    pub unit: &'a str,
    /// Drawn as a dashed line and labelled (a memory or CPU limit).
    pub limit: Option<f64>,
}

const W: f64 = 360.0;
const H: f64 = 130.0;
/// Room for the y labels (left) and time labels (bottom).
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 20.0;

/// A value as its axis label.
pub fn label(v: f64, unit: &str) -> String {
    match unit {
        "bytes" => mib(v),
        "%" => format!("{v:.0}%"),
        "ms" if v >= 1000.0 => format!("{:.1} s", v / 1000.0),
        "ms" => format!("{v:.0} ms"),
        "/min" => format!("{v:.0}/min"),
        other => format!("{v:.1}{other}"),
    }
}

/// `HH:MM` in UTC.
fn clock(t: i64) -> String {
    let m = t.rem_euclid(86_400) / 60;
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The SVG markup. Only numbers, labels made here and the escaped title go in.
pub fn svg(chart: &Chart<'_>, values: &[(i64, f64)], now: i64, window: i64) -> String {
    let max = values
        .iter()
        .map(|(_, v)| *v)
        .chain(chart.limit)
        .fold(chart.floor_max, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.05;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let start = now - window;
    let x_of = |t: i64| LEFT + (t - start) as f64 / window.max(1) as f64 * pw;
    let y_of = |v: f64| TOP + ph - (v / max * ph);
    let points: Vec<(f64, f64)> = values
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(t, v)| (x_of(*t), y_of(*v)))
        .collect();
    let title = escape(&format!("{}: {}", chart.title, chart.summary));
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\"><title>{title}</title>"
    );
    // Grid and y labels: zero, half, top.
    for frac in [0.0, 0.5, 1.0] {
        let v = max / 1.05 * frac;
        let y = y_of(v);
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#e2ddd2\" stroke-width=\"1\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#5b6472\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            y + 3.5,
            escape(&label(v, chart.unit))
        ));
    }
    // Time labels every quarter of the window, in UTC.
    for i in 0..=4 {
        let t = start + window * i / 4;
        let x = x_of(t);
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        out.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#c8c2b4\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#5b6472\">{}</text>",
            TOP + ph,
            TOP + ph + 3.0,
            H - 5.0,
            clock(t)
        ));
    }
    out.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#c8c2b4\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#c8c2b4\"/>",
        TOP + ph,
        W - RIGHT,
        TOP + ph,
        TOP + ph
    ));
    if let Some(limit) = chart.limit {
        let y = y_of(limit);
        out.push_str(&format!(
            "<line class=\"limit\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#b3261e\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#b3261e\">limit {}</text>",
            W - RIGHT,
            W - RIGHT - 2.0,
            y - 3.0,
            escape(&label(limit, chart.unit))
        ));
    }
    if points.len() >= 2 {
        let list: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        out.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/>",
            list.join(" ")
        ));
    } else if let Some((x, y)) = points.first() {
        out.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"currentColor\"/>"
        ));
    }
    out.push_str("</svg>");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `12.3 MiB`, `1.02 GiB`.
pub fn mib(bytes: f64) -> String {
    let m = bytes / (1024.0 * 1024.0);
    if m >= 1024.0 {
        format!("{:.2} GiB", m / 1024.0)
    } else {
        format!("{m:.1} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(limit: Option<f64>) -> Chart<'static> {
        Chart {
            title: "Memory",
            summary: "2 now".into(),
            floor_max: 4.0,
            unit: "bytes",
            limit,
        }
    }

    #[test]
    fn points_fill_the_window_with_axes_times_and_units() {
        let now = 1_700_000_000 - 1_700_000_000 % 3600;
        let out = svg(
            &chart(None),
            &[(now - 3600, 0.0), (now - 1800, 2.0), (now, 4.0)],
            now,
            3600,
        );
        let first_x = LEFT;
        assert!(out.contains(&format!("points=\"{first_x:.1},")), "{out}");
        assert!(out.contains(&format!(",{:.1}\"", y_top(4.0))), "{out}");
        assert!(out.contains("role=\"img\" aria-label=\"Memory: 2 now\""));
        assert!(
            out.contains(">0.0 MiB<"),
            "a zero label with its unit: {out}"
        );
        // Times in UTC every 15 minutes, ending now.
        assert!(out.contains(&format!(">{}<", clock(now))), "{out}");
        assert!(out.contains(&format!(">{}<", clock(now - 1800))), "{out}");
        assert!(
            !out.contains("style"),
            "no style attribute: the CSP forbids them"
        );
    }

    fn y_top(max_value: f64) -> f64 {
        let max = max_value * 1.05;
        TOP + (H - TOP - BOTTOM) - (max_value / max * (H - TOP - BOTTOM))
    }

    #[test]
    fn a_limit_is_a_dashed_labelled_line_and_lifts_the_scale() {
        let out = svg(
            &chart(Some(512.0 * 1024.0 * 1024.0)),
            &[(10, 1.0), (20, 2.0)],
            20,
            60,
        );
        assert!(out.contains("class=\"limit\""), "{out}");
        assert!(out.contains("limit 512.0 MiB"), "{out}");
        assert!(
            out.contains(">512.0 MiB<") || out.contains(">256.0 MiB<"),
            "{out}"
        );
    }

    #[test]
    fn one_point_is_a_dot_and_none_is_an_empty_frame() {
        let c = Chart {
            title: "CPU <x>",
            summary: String::new(),
            floor_max: 1.0,
            unit: "%",
            limit: None,
        };
        assert!(svg(&c, &[(10, 0.5)], 10, 60).contains("<circle"));
        let empty = svg(&c, &[], 10, 60);
        assert!(!empty.contains("polyline") && empty.contains("CPU &lt;x&gt;"));
        assert_eq!(mib(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(label(1500.0, "ms"), "1.5 s");
        assert_eq!(label(12.0, "/min"), "12/min");
    }
}
