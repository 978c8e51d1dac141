//! The Prometheus text format (`GET /metrics`, format 0.0.4), parsed once
//! into samples that are then read by name and labels; histograms are put
//! back together from their `_bucket`, `_sum` and `_count` samples, and
//! quantiles computed from the buckets as PromQL's `histogram_quantile`
//! does.
//!
//! Dependency-free, so both `redmirror status`/`top` (the console) and the
//! test kit read metrics with this one parser.
//!
//! # Layout
//! - [`Metrics`]: every sample of one exposition; [`Metrics::sample`] reads
//!   one written as `name{labels}`, [`Metrics::get`], [`Metrics::sum`] and
//!   [`Metrics::by_label`] by name and labels.
//! - [`Histogram`]: a histogram put back together, its delta between two
//!   scrapes and its quantiles.
//! - [`ParseError`]: a line that is not in the format, with its number.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histogram parts).
    pub name: String,
    /// Labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

/// A line that is not in the text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: &'static str,
    /// The line (at most 200 characters of it).
    pub text: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not Prometheus text: line {}: {}: {:?}",
            self.line, self.problem, self.text
        )
    }
}

impl std::error::Error for ParseError {}

/// Every sample of one exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses an exposition. Comment lines (`# HELP`, `# TYPE`) and blank
    /// lines are skipped; any other line must be a sample.
    pub fn parse(text: &str) -> Result<Metrics, ParseError> {
        let mut samples = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|problem| ParseError {
                line: i + 1,
                problem,
                text: line.chars().take(200).collect(),
            })?;
            samples.push(sample);
        }
        Ok(Metrics { samples })
    }

    /// Every sample, in the order of the exposition.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The sample written as `selector` is in the exposition, e.g.
    /// `redmirror_apply_events_total{outcome="applied"}`: the same name and
    /// exactly these labels, in any order. `None` when absent or when the
    /// selector is not a sample name with labels.
    pub fn sample(&self, selector: &str) -> Option<f64> {
        let (name, labels) = parse_series(selector.trim()).ok()?;
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
    }

    /// The first sample of `name` carrying every label of `with` (others
    /// may be there too).
    pub fn get(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.of(name)
            .find(|s| with.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .map(|s| s.value)
    }

    /// The sum of every sample of `name` (`None` when there is none).
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.of(name).map(|s| s.value).reduce(|a, b| a + b)
    }

    /// The samples of `name` by the value of their `label`, summed over
    /// their other labels (samples without the label are left out).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.of(name) {
            if let Some(v) = s.labels.get(label) {
                *out.entry(v.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The histogram `name`, from its `name_bucket{le}`, `name_sum` and
    /// `name_count` samples, summed over every label but `le`. `None` when
    /// it has no bucket.
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for s in self.of(&bucket) {
            let Some(le) = s.labels.get("le").and_then(|v| parse_value(v).ok()) else {
                continue;
            };
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += s.value,
                None => by_le.push((le, s.value)),
            }
        }
        if by_le.is_empty() {
            return None;
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = self
            .sum(&format!("{name}_count"))
            .unwrap_or_else(|| by_le.last().map_or(0.0, |b| b.1));
        Some(Histogram {
            buckets: by_le,
            sum: self.sum(&format!("{name}_sum")).unwrap_or(0.0),
            count,
        })
    }

    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// A histogram: cumulative counts per upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(upper bound, observations at or below it)`, ascending, normally
    /// ending with `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    /// The observations made since `earlier` (an earlier scrape of the
    /// same histogram): bucket by bucket differences. When a count went
    /// down the process restarted in between, and everything it holds is
    /// new: `self` is returned.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| earlier.buckets.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, n)| *n);
        let reset = self.count < earlier.count || self.buckets.iter().any(|(le, n)| *n < before(*le));
        if reset {
            return self.clone();
        }
        Histogram {
            buckets: self.buckets.iter().map(|(le, n)| (*le, n - before(*le))).collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// The `q` quantile (0 to 1) estimated from the buckets as PromQL's
    /// `histogram_quantile` does: linear interpolation inside the bucket
    /// where the rank falls (from 0 for the first bucket); a rank in the
    /// `+Inf` bucket answers the largest finite bound. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let q = q.clamp(0.0, 1.0);
        let total = self.buckets.last()?.1;
        if total <= 0.0 || total.is_nan() {
            return None;
        }
        let rank = q * total;
        let i = self.buckets.iter().position(|(_, n)| *n >= rank)?;
        let (upper, n) = self.buckets[i];
        if upper.is_infinite() {
            return match i {
                0 => None,
                _ => Some(self.buckets[i - 1].0),
            };
        }
        let (lower, below) = match i {
            0 if upper <= 0.0 => return Some(upper),
            0 => (0.0, 0.0),
            _ => self.buckets[i - 1],
        };
        let inside = n - below;
        if inside <= 0.0 {
            return Some(lower);
        }
        Some(lower + (upper - lower) * (rank - below) / inside)
    }
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let series_end = if line[name_end..].starts_with('{') {
        closing_brace(line, name_end).ok_or("labels not closed")? + 1
    } else {
        name_end
    };
    let (name, labels) = parse_series(&line[..series_end])?;
    let mut rest = line[series_end..].split_whitespace();
    let value = parse_value(rest.next().ok_or("no value")?)?;
    if let Some(ts) = rest.next() {
        ts.parse::<i64>().map_err(|_| "timestamp is not an integer")?;
    }
    if rest.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample { name, labels, value })
}

/// The index of the `}` closing the labels opened at `open`, skipping
/// quoted values (with their escapes).
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// `name` or `name{label="value",...}`.
fn parse_series(s: &str) -> Result<(String, BTreeMap<String, String>), &'static str> {
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if !is_name(name, true) {
        return Err("bad metric name");
    }
    let mut labels = BTreeMap::new();
    let Some(rest) = rest else {
        return Ok((name.to_string(), labels));
    };
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        match chars.peek() {
            Some('}') => {
                chars.next();
                break;
            }
            None => return Err("labels not closed"),
            _ => {}
        }
        let mut label = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            label.push(c);
        }
        if !is_name(&label, false) {
            return Err("bad label name");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err("label without '='");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('"') {
            return Err("label value not quoted");
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err("label value not closed"),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => return Err("bad escape in a label value"),
                },
                Some(c) => value.push(c),
            }
        }
        labels.insert(label, value);
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            Some(',') | Some('}') => {}
            _ => return Err("expected ',' or '}' after a label"),
        }
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err("unexpected text after the labels");
    }
    Ok((name.to_string(), labels))
}

fn is_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut cs = s.chars();
    cs.next().is_some_and(|c| ok(c, true)) && cs.all(|c| ok(c, false))
}

fn parse_value(v: &str) -> Result<f64, &'static str> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| "value is not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP redmirror_apply_events_total Events handled by apply, by outcome.
# TYPE redmirror_apply_events_total counter
redmirror_apply_events_total{outcome="applied"} 120
redmirror_apply_events_total{outcome="deleted"} 3

redmirror_apply_events_total{outcome="skipped_stale"} 7 1700000000000
redmirror_consumer_lag_messages{partition="0"} 5
redmirror_consumer_lag_messages{partition="1"} 0
redmirror_consumer_lag_messages{partition="2"} 12000
odd{b="x,y}z", a = "say \"hi\"\\n\n" ,} -Inf
redmirror_build_info{version="0.1.0"} 1
redmirror_capture_gaps_total 2
nan_metric NaN
# TYPE redmirror_end_to_end_seconds histogram
redmirror_end_to_end_seconds_bucket{le="0.001"} 10
redmirror_end_to_end_seconds_bucket{le="0.01"} 60
redmirror_end_to_end_seconds_bucket{le="0.1"} 100
redmirror_end_to_end_seconds_bucket{le="+Inf"} 100
redmirror_end_to_end_seconds_sum 2.5
redmirror_end_to_end_seconds_count 100
"#;

    #[test]
    fn samples_are_read_by_name_and_labels() {
        let m = Metrics::parse(TEXT).unwrap();
        assert_eq!(
            m.sample(r#"redmirror_apply_events_total{outcome="applied"}"#),
            Some(120.0)
        );
        assert_eq!(
            m.sample(r#"redmirror_apply_events_total{outcome="skipped_stale"}"#),
            Some(7.0)
        );
        assert_eq!(m.sample("redmirror_capture_gaps_total"), Some(2.0));
        assert_eq!(m.sample(r#"redmirror_apply_events_total{outcome="native"}"#), None);
        // The whole label set must match, in any order.
        assert_eq!(m.sample("redmirror_apply_events_total"), None);
        assert_eq!(
            m.sample(r#"odd{a="say \"hi\"\\n\n",b="x,y}z"}"#),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(m.get("redmirror_build_info", &[]), Some(1.0));
        assert_eq!(
            m.get("redmirror_apply_events_total", &[("outcome", "deleted")]),
            Some(3.0)
        );
        assert_eq!(m.sum("redmirror_apply_events_total"), Some(130.0));
        assert_eq!(m.sum("absent"), None);
        assert!(m.sample("nan_metric").unwrap().is_nan());
        let lag = m.by_label("redmirror_consumer_lag_messages", "partition");
        assert_eq!(lag.get("2"), Some(&12000.0));
        assert_eq!(lag.len(), 3);
        let odd = &m.samples().iter().find(|s| s.name == "odd").unwrap().labels;
        assert_eq!(odd["a"], "say \"hi\"\\n\n");
        assert_eq!(odd["b"], "x,y}z");
    }

    #[test]
    fn lines_not_in_the_format_are_refused_with_their_number() {
        for (text, problem) in [
            ("ok 1\nbad line here", "value is not a number"),
            ("ok 1\n{a=\"b\"} 1", "bad metric name"),
            ("ok 1\nm{a=\"b} 1", "labels not closed"),
            ("ok 1\nm{a=b} 1", "label value not quoted"),
            ("ok 1\nm{a=\"b\" c=\"d\"} 1", "expected ',' or '}' after a label"),
            ("ok 1\nm 1 2 3", "unexpected text after the value"),
            ("ok 1\nm", "no value"),
            ("ok 1\n<html>", "bad metric name"),
        ] {
            let e = Metrics::parse(text).unwrap_err();
            assert_eq!((e.line, e.problem), (2, problem), "{text:?}");
        }
    }

    #[test]
    fn a_histogram_is_put_back_together_from_its_buckets() {
        let m = Metrics::parse(TEXT).unwrap();
        let h = m.histogram("redmirror_end_to_end_seconds").unwrap();
        assert_eq!(h.count, 100.0);
        assert_eq!(h.sum, 2.5);
        assert_eq!(
            h.buckets,
            vec![(0.001, 10.0), (0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)]
        );
        assert!(m.histogram("redmirror_capture_gaps_total").is_none());
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_of_their_rank() {
        let h = Histogram {
            buckets: vec![(0.001, 10.0), (0.01, 60.0), (0.1, 100.0), (f64::INFINITY, 100.0)],
            sum: 0.0,
            count: 100.0,
        };
        // Rank 50 falls in (0.001, 0.01], 40 of its 50 observations in.
        assert!(
            close(h.quantile(0.5), 0.001 + 0.009 * 40.0 / 50.0),
            "{:?}",
            h.quantile(0.5)
        );
        // Rank 99 falls in (0.01, 0.1], 39 of its 40 observations in.
        assert!(
            close(h.quantile(0.99), 0.01 + 0.09 * 39.0 / 40.0),
            "{:?}",
            h.quantile(0.99)
        );
        // The first bucket interpolates from 0.
        assert!(close(h.quantile(0.05), 0.0005));
        assert!(close(h.quantile(1.0), 0.1));
        // A rank past the largest finite bound answers that bound.
        let tail = Histogram {
            buckets: vec![(0.001, 10.0), (0.1, 100.0), (f64::INFINITY, 200.0)],
            sum: 0.0,
            count: 200.0,
        };
        assert!(close(tail.quantile(0.99), 0.1));
        // Nothing observed, nothing to say.
        let empty = Histogram {
            buckets: vec![(0.001, 0.0), (f64::INFINITY, 0.0)],
            sum: 0.0,
            count: 0.0,
        };
        assert_eq!(empty.quantile(0.5), None);
    }

    #[test]
    fn the_delta_between_two_scrapes_holds_only_the_new_observations() {
        let before = Histogram {
            buckets: vec![(0.001, 10.0), (0.01, 60.0), (f64::INFINITY, 100.0)],
            sum: 1.0,
            count: 100.0,
        };
        let after = Histogram {
            buckets: vec![(0.001, 10.0), (0.01, 70.0), (f64::INFINITY, 120.0)],
            sum: 3.0,
            count: 120.0,
        };
        let d = after.since(&before);
        assert_eq!(d.buckets, vec![(0.001, 0.0), (0.01, 10.0), (f64::INFINITY, 20.0)]);
        assert_eq!((d.sum, d.count), (2.0, 20.0));
        // Half of the 20 new ones are in (0.001, 0.01]: p50 is its top.
        assert!(close(d.quantile(0.5), 0.01));
        // p25: rank 5 of the 10 in that bucket.
        assert!(close(d.quantile(0.25), 0.001 + 0.009 * 0.5));
        // Nothing new: no quantile.
        assert_eq!(after.since(&after).quantile(0.5), None);
        // A restart in between: everything in the later scrape is new.
        assert_eq!(before.since(&after), before);
    }
}
