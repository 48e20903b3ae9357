//! Small line charts drawn on the server as inline SVG (no script, no CDN, nothing the CSP
//! would refuse): presentation attributes only, no `style`.

/// A chart of `values` (unix seconds, value) over the `window` seconds up to `now`.
pub struct Chart<'a> {
    pub title: &'a str,
    /// The figure in words for screen readers and as the caption: "12.0 MiB now, 40.5 MiB at most".
    pub summary: String,
    /// The y axis goes up to at least this (a limit, say), so a flat line is not a full one.
    pub floor_max: f64,
}

const W: f64 = 300.0;
const H: f64 = 60.0;

/// The SVG markup. Only numbers and the escaped title go in.
pub fn svg(chart: &Chart<'_>, values: &[(i64, f64)], now: i64, window: i64) -> String {
    let max = values
        .iter()
        .map(|(_, v)| *v)
        .fold(chart.floor_max, f64::max)
        .max(f64::MIN_POSITIVE);
    let start = now - window;
    let points: Vec<String> = values
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(t, v)| {
            let x = (t - start) as f64 / window as f64 * W;
            let y = H - (v / max * (H - 2.0)) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let label = escape(&format!("{}: {}", chart.title, chart.summary));
    let line = if points.len() >= 2 {
        format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"/>",
            points.join(" ")
        )
    } else if let Some(p) = points.first() {
        let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
        format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2\" fill=\"currentColor\"/>")
    } else {
        String::new()
    };
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"300\" height=\"60\" role=\"img\" aria-label=\"{label}\" preserveAspectRatio=\"none\"><title>{label}</title><line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" stroke=\"#c8c2b4\"/>{line}</svg>"
    )
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

    #[test]
    fn points_fill_the_window_and_scale_to_the_larger_of_max_and_floor() {
        let chart = Chart {
            title: "Memory",
            summary: "2 now".into(),
            floor_max: 4.0,
        };
        let out = svg(&chart, &[(1000, 0.0), (1030, 2.0), (1060, 4.0)], 1060, 60);
        assert!(
            out.contains("points=\"0.0,59.0 150.0,30.0 300.0,1.0\""),
            "{out}"
        );
        assert!(out.contains("role=\"img\" aria-label=\"Memory: 2 now\""));
        assert!(
            !out.contains("style"),
            "no style attribute: the CSP forbids them"
        );
    }

    #[test]
    fn one_point_is_a_dot_and_none_is_an_empty_frame() {
        let chart = Chart {
            title: "CPU <x>",
            summary: String::new(),
            floor_max: 1.0,
        };
        assert!(svg(&chart, &[(10, 0.5)], 10, 60).contains("<circle"));
        let empty = svg(&chart, &[], 10, 60);
        assert!(!empty.contains("polyline") && empty.contains("CPU &lt;x&gt;"));
        assert_eq!(mib(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }
}
