//! Statistics: distributions, metrics, ratios and their tables.

use super::*;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Dist {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) min: f64,
    pub(crate) mean: f64,
}

/// Nearest-rank percentiles.
pub(crate) fn dist(v: &[f64]) -> Option<Dist> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let pct = |p: f64| s[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Dist {
        n,
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        max: s[n - 1],
        min: s[0],
        mean: s.iter().sum::<f64>() / n as f64,
    })
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `b - a` in milliseconds, negative when `b` is earlier.
pub(crate) fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a { ms(b - a) } else { -ms(a - b) }
}

pub(crate) fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// One measured quantity.
#[derive(Debug, Clone)]
pub(crate) struct Metric {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) values: Vec<f64>,
    pub(crate) errors: usize,
    pub(crate) note: String,
}

impl Metric {
    pub(crate) fn new(id: &str, name: &str, unit: &'static str) -> Metric {
        Metric {
            id: id.into(),
            name: name.into(),
            unit,
            values: Vec::new(),
            errors: 0,
            note: String::new(),
        }
    }
    pub(crate) fn dist(&self) -> Option<Dist> {
        dist(&self.values)
    }
    pub(crate) fn json(&self) -> Value {
        json!({"name": self.name, "unit": self.unit, "dist": self.dist(), "errors": self.errors, "note": self.note})
    }
}

pub(crate) fn table(metrics: &[&Metric]) -> String {
    let mut s = String::from(
        "| measurement | unit | p50 | p90 | p99 | max | mean | n | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in metrics {
        let note = if m.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.note)
        };
        match m.dist() {
            Some(d) => s.push_str(&format!(
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.name,
                note,
                m.unit,
                fmt_num(d.p50),
                fmt_num(d.p90),
                fmt_num(d.p99),
                fmt_num(d.max),
                fmt_num(d.mean),
                d.n,
                m.errors
            )),
            None => s.push_str(&format!(
                "| {}{} | {} | - | - | - | - | - | 0 | {} |\n",
                m.name, note, m.unit, m.errors
            )),
        }
    }
    s
}

/// `a / b` at p50 and p90.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Ratio {
    pub(crate) name: String,
    pub(crate) numerator: String,
    pub(crate) denominator: String,
    pub(crate) p50: Option<f64>,
    pub(crate) p90: Option<f64>,
}

pub(crate) fn ratio(name: &str, a: &Metric, b: &Metric) -> Ratio {
    let (da, db) = (a.dist(), b.dist());
    let r = |f: fn(&Dist) -> f64| match (&da, &db) {
        (Some(x), Some(y)) if f(y) > 0.0 => Some(f(x) / f(y)),
        _ => None,
    };
    Ratio {
        name: name.into(),
        numerator: a.id.clone(),
        denominator: b.id.clone(),
        p50: r(|d| d.p50),
        p90: r(|d| d.p90),
    }
}

pub(crate) fn ratio_table(rs: &[&Ratio]) -> String {
    let mut s = String::from("| ratio (same run) | p50 | p90 |\n|---|---:|---:|\n");
    let f = |x: Option<f64>| x.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into());
    for r in rs {
        s.push_str(&format!("| {} | {} | {} |\n", r.name, f(r.p50), f(r.p90)));
    }
    s
}

pub(crate) fn push(m: &mut Metric, r: Result<f64>) {
    match r {
        Ok(v) => m.values.push(v),
        Err(e) => {
            m.errors += 1;
            if m.errors <= 3 {
                eprintln!("bench: {}: {e:#}", m.id);
            }
        }
    }
}
