//! Inline SVG sparklines: the last hour of one series, drawn as one `<path>` that breaks at gaps.
//!
//! The model gives up to [`SLOTS`] samples per hour. A sparkline is about 100 px wide, so it is
//! drawn with [`POINTS`] points, each the largest of three neighbouring samples (a spike stays
//! visible); the label's minimum and maximum are those of the samples themselves. The path uses
//! small integer coordinates and relative steps (`M0 13l2-3 2 4`), about a third smaller than a
//! `<polyline>` with absolute points: 150 sparklines (50 plugins) take about 25 KB.

use std::fmt::{self, Display, Formatter};

use super::text::{Esc, Measure, Unit};

/// Samples in an hour, as the model gives them (oldest first, the newest is the last).
const SLOTS: usize = 120;
/// Points drawn per sparkline.
const POINTS: usize = 40;
/// Samples per drawn point.
const PER_POINT: usize = SLOTS / POINTS;
/// Horizontal distance between two points, in view-box units.
const STEP: usize = 2;
/// The highest and lowest y of the line, inside a box 26 tall so a stroke on the edge still shows.
const TOP: i32 = 1;
const BOTTOM: i32 = 25;
/// The view box: `(POINTS - 1) * STEP` wide and 26 tall, 3:1 like the box the CSS gives it.
const VIEW_BOX: &str = "0 0 78 26";

/// One series as an `<svg role="img">` whose label says what it is and its range, e.g.
/// `CPU, last hour: min 0.4 % max 12.3 %`.
pub(super) struct Sparkline<'a> {
    /// What the series is, for the label (`CPU`, `Memory`, `Events per second`).
    pub(super) label: &'a str,
    /// The unit of the label's numbers.
    pub(super) unit: Unit,
    /// Up to [`SLOTS`] samples, oldest first; `None` for a gap. The newest is drawn at the right
    /// edge, so a series shorter than an hour starts part-way across.
    pub(super) values: &'a [Option<f64>],
}

impl Display for Sparkline<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let recent = &self.values[self.values.len().saturating_sub(SLOTS)..];
        let present = || recent.iter().flatten().copied().filter(|v| v.is_finite());
        let (Some(min), Some(max)) = (present().reduce(f64::min), present().reduce(f64::max))
        else {
            let label = Esc(self.label);
            return write!(
                f,
                r#"<svg viewBox="{VIEW_BOX}" role="img" aria-label="{label}, last hour: no data"></svg>"#
            );
        };
        write!(
            f,
            r#"<svg viewBox="{VIEW_BOX}" role="img" aria-label="{}, last hour: min {} max {}"><path d=""#,
            Esc(self.label),
            Measure(Some(min), self.unit),
            Measure(Some(max), self.unit),
        )?;
        // The scale always includes zero: a steady 45 MB is a flat line near the top, not noise
        // magnified to the full height.
        let (low, high) = (min.min(0.0), max.max(0.0));
        let points = downsample(recent);
        // The y of the previous point while in a run, and whether a pair was written since its `l`.
        let mut previous: Option<i32> = None;
        let mut pairs = false;
        for (i, point) in points.iter().enumerate() {
            let Some(v) = point else {
                previous = None;
                continue;
            };
            let y = y_of(*v, low, high);
            match previous {
                // A lone point is a zero-length segment, which round caps draw as a dot.
                None if points.get(i + 1).is_none_or(Option::is_none) => {
                    write!(f, "M{} {y}h0", i * STEP)?;
                }
                None => {
                    write!(f, "M{} {y}l", i * STEP)?;
                    pairs = false;
                }
                Some(before) => {
                    if pairs {
                        f.write_str(" ")?;
                    }
                    pairs = true;
                    // A minus sign separates two numbers in path data, so `2-3` needs no space.
                    let dy = y - before;
                    if dy < 0 { write!(f, "{STEP}{dy}")? } else { write!(f, "{STEP} {dy}")? }
                }
            }
            previous = Some(y);
        }
        f.write_str(r#""/></svg>"#)
    }
}

/// The series right-aligned in [`SLOTS`] slots and reduced to [`POINTS`] points, each the largest
/// present sample of its slots (`None` when all are gaps).
fn downsample(recent: &[Option<f64>]) -> [Option<f64>; POINTS] {
    let offset = SLOTS - recent.len();
    let mut points = [None; POINTS];
    for (i, sample) in recent.iter().enumerate() {
        let Some(v) = sample.filter(|v| v.is_finite()) else { continue };
        let point = &mut points[(offset + i) / PER_POINT];
        *point = Some(point.map_or(v, |p: f64| p.max(v)));
    }
    points
}

/// The y of a value on a scale from `low` (bottom) to `high` (top); an all-zero series lies on the
/// bottom.
fn y_of(v: f64, low: f64, high: f64) -> i32 {
    let span = high - low;
    if span <= 0.0 {
        return BOTTOM;
    }
    let fraction = ((v - low) / span).clamp(0.0, 1.0);
    // In [TOP, BOTTOM] by the clamp, so the cast is exact.
    BOTTOM - (fraction * f64::from(BOTTOM - TOP)).round() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spark(values: &[Option<f64>]) -> String {
        Sparkline { label: "CPU", unit: Unit::Percent, values }.to_string()
    }

    /// The runs of the path, as absolute (x, y) points; a lone dot is one point.
    fn runs(svg: &str) -> Vec<Vec<(i32, i32)>> {
        let d = svg.split(r#"<path d=""#).nth(1).map_or("", |rest| rest.split('"').next().unwrap());
        let numbers = |text: &str| -> Vec<i32> {
            let mut out = Vec::new();
            let mut current = String::new();
            for c in text.chars() {
                if c == '-' || c == ' ' {
                    if !current.is_empty() {
                        out.push(current.parse().unwrap());
                    }
                    current = if c == '-' { "-".into() } else { String::new() };
                } else {
                    current.push(c);
                }
            }
            if !current.is_empty() {
                out.push(current.parse().unwrap());
            }
            out
        };
        d.split('M')
            .skip(1)
            .map(|run| {
                let (start, steps) = run.split_once('l').or_else(|| run.split_once('h')).unwrap();
                let start = numbers(start);
                let mut points = vec![(start[0], start[1])];
                if run.contains('l') {
                    for pair in numbers(steps).chunks(2) {
                        let &(x, y) = points.last().unwrap();
                        points.push((x + pair[0], y + pair[1]));
                    }
                } else {
                    assert_eq!(steps, "0", "a dot is a zero-length segment");
                }
                points
            })
            .collect()
    }

    #[test]
    fn a_full_hour_is_one_line_across_the_box_with_its_range_in_the_label() {
        let values: Vec<_> = (0..120).map(|i| Some(f64::from(i) / 10.0)).collect();
        let svg = spark(&values);
        assert!(
            svg.starts_with(r#"<svg viewBox="0 0 78 26" role="img" aria-label="CPU, last hour: min 0.0 % max 11.9 %"><path d="M0 25l2"#),
            "{svg}"
        );
        let runs = runs(&svg);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].len(), 40);
        assert_eq!(runs[0].last(), Some(&(78, 1)), "the maximum is at the top right");
        assert!(runs[0].windows(2).all(|w| w[1].1 <= w[0].1), "a rising series never goes down");
    }

    #[test]
    fn gaps_break_the_line_and_a_lone_point_is_a_dot() {
        let mut values = vec![Some(1.0); 120];
        values[30..60].fill(None); // points 10..20 are gaps
        values[84..90].fill(None); // points 28 and 29 are gaps
        values[93..120].fill(None); // point 30 stands alone, points 31.. are gaps
        let svg = spark(&values);
        let runs = runs(&svg);
        assert_eq!(runs.len(), 3, "{svg}");
        assert_eq!(runs[0].len(), 10);
        assert_eq!((runs[1].first(), runs[1].last()), (Some(&(40, 1)), Some(&(54, 1))));
        assert_eq!(runs[2], vec![(60, 1)], "{svg}");
        assert!(svg.contains("M60 1h0"));
    }

    #[test]
    fn constant_values_are_a_flat_line_and_zeros_lie_on_the_bottom() {
        for (value, y) in [(7.5, TOP), (0.0, BOTTOM)] {
            let svg = spark(&vec![Some(value); 120]);
            let runs = runs(&svg);
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].len(), 40);
            assert!(runs[0].iter().all(|&(_, py)| py == y), "{value}: {svg}");
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn no_samples_is_an_empty_box_that_says_so() {
        for values in [vec![], vec![None; 120], vec![Some(f64::NAN); 3]] {
            assert_eq!(
                spark(&values),
                r#"<svg viewBox="0 0 78 26" role="img" aria-label="CPU, last hour: no data"></svg>"#
            );
        }
    }

    #[test]
    fn a_short_series_ends_at_the_right_edge_and_a_long_one_keeps_its_newest_hour() {
        let svg = spark(&[Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0), Some(6.0)]);
        assert_eq!(runs(&svg), vec![vec![(76, 13), (78, 1)]], "points max(1,2,3) and max(4,5,6)");
        let mut long = vec![Some(100.0); 50];
        long.extend(vec![Some(1.0); 120]);
        let svg = spark(&long);
        assert!(svg.contains("max 1.0 %"), "samples older than an hour are not shown: {svg}");
        assert_eq!(runs(&svg)[0].len(), 40);
    }
}
