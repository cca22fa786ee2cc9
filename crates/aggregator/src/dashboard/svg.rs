//! Server-rendered SVG charts: horizontal bars for distributions, columns for weeks. Colours
//! come from the page's CSS classes, so the same SVG follows the light and the dark theme.

use std::fmt::Write;

/// Escapes text for HTML and SVG (element content and quoted attributes).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One bar: its label, its length, and the text written beside it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: f64,
    pub(crate) text: String,
}

const WIDTH: f64 = 480.0;
const LABEL: f64 = 150.0;
const ROW: f64 = 24.0;

/// Horizontal bars, one row each; `None` when there is nothing to draw.
pub(crate) fn hbars(title: &str, bars: &[Bar]) -> Option<String> {
    if bars.is_empty() {
        return None;
    }
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-9);
    let height = ROW * bars.len() as f64 + 4.0;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let span = WIDTH - LABEL - 70.0;
    for (i, b) in bars.iter().enumerate() {
        let y = i as f64 * ROW + 2.0;
        let w = (b.value.max(0.0) / max * span).max(1.0);
        let _ = write!(
            svg,
            r#"<text class="label" x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect class="bar" x="{LABEL}" y="{y}" width="{w:.1}" height="{h}" rx="3"/><text class="value" x="{vx:.1}" y="{ty}">{text}</text>"#,
            lx = LABEL - 8.0,
            ty = y + 15.0,
            label = esc(&b.label),
            h = ROW - 6.0,
            vx = LABEL + w + 6.0,
            text = esc(&b.text),
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// Columns over time (oldest left), with an optional line of percentages (0–100) on top;
/// `None` when every column is empty.
pub(crate) fn columns(title: &str, bars: &[Bar], line: &[Option<f64>]) -> Option<String> {
    if bars.iter().all(|b| b.value <= 0.0) && line.iter().all(Option::is_none) {
        return None;
    }
    let (height, top, bottom) = (200.0, 16.0, 34.0);
    let plot = height - top - bottom;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-9);
    let step = WIDTH / bars.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}"><title>{t}</title><line class="axis" x1="0" x2="{WIDTH}" y1="{base}" y2="{base}"/>"#,
        t = esc(title),
        base = top + plot,
    );
    for (i, b) in bars.iter().enumerate() {
        let h = b.value.max(0.0) / max * plot;
        let x = i as f64 * step + step * 0.15;
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="2"><title>{label}: {text}</title></rect>"#,
            y = top + plot - h,
            w = step * 0.7,
            label = esc(&b.label),
            text = esc(&b.text),
        );
        if h > 0.0 {
            let _ = write!(
                svg,
                r#"<text class="value small" x="{cx:.1}" y="{ty:.1}" text-anchor="middle">{text}</text>"#,
                cx = x + step * 0.35,
                ty = (top + plot - h - 3.0).max(10.0),
                text = esc(&b.text),
            );
        }
        // Every other label, so they do not overlap.
        if i % 2 == bars.len().saturating_sub(1) % 2 {
            let _ = write!(
                svg,
                r#"<text class="label small" x="{cx:.1}" y="{ly}" text-anchor="middle">{label}</text>"#,
                cx = x + step * 0.35,
                ly = height - 18.0,
                label = esc(&b.label),
            );
        }
    }
    let points: Vec<String> = line
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.map(|p| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step + step * 0.5,
                    top + plot - p.clamp(0.0, 100.0) / 100.0 * plot
                )
            })
        })
        .collect();
    if !points.is_empty() {
        let _ = write!(
            svg,
            r#"<polyline class="line" points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            if let Some((x, y)) = p.split_once(',') {
                let _ = write!(svg, r#"<circle class="dot" cx="{x}" cy="{y}" r="3"/>"#);
            }
        }
    }
    svg.push_str("</svg>");
    Some(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_empty_charts_are_none() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let bars = [Bar {
            label: "<script>".into(),
            value: 3.0,
            text: "3".into(),
        }];
        let svg = hbars("t", &bars).expect("drawn");
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert_eq!(hbars("t", &[]), None);
        assert_eq!(
            columns(
                "t",
                &[Bar {
                    label: "w".into(),
                    value: 0.0,
                    text: "0".into()
                }],
                &[None]
            ),
            None
        );
    }
}
