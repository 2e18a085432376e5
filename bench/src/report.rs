//! The results: rows of numbers with their targets, rendered as a terminal
//! table, a markdown table and JSON. A row has three number columns, by
//! default edge-responses, the backend alone and the difference; a section
//! may name them otherwise (a side-by-side comparison does).

use serde_json::{json, Value};

/// How a row's numbers are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    PerSecond,
    KiB,
    MiB,
    Count,
    Ratio,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::PerSecond => "req/s",
            Unit::KiB => "KiB",
            Unit::MiB => "MiB",
            Unit::Count => "count",
            Unit::Ratio => "ratio",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::Millis => format!("{value:.3} ms"),
            Unit::PerSecond => format!("{value:.0} req/s"),
            Unit::KiB => format!("{value:.1} KiB"),
            Unit::MiB => format!("{value:.1} MiB"),
            Unit::Count => format_count(value),
            Unit::Ratio => format!("{value:.2}x"),
        }
    }
}

/// A whole number without decimals, anything else with two.
pub fn format_count(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// A target a number is held to.
#[derive(Debug, Clone)]
pub struct Target {
    pub text: String,
    pub pass: bool,
}

impl Target {
    pub fn new(text: impl Into<String>, pass: bool) -> Target {
        Target {
            text: text.into(),
            pass,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub metric: String,
    pub unit: Unit,
    /// Through edge-responses (the first number column).
    pub edge: Option<f64>,
    /// The backend on its own (the second number column).
    pub backend: Option<f64>,
    /// What edge-responses adds, `edge - backend` (the third number column).
    pub added: Option<f64>,
    pub target: Option<Target>,
    pub note: String,
}

impl Row {
    /// A row of one number.
    pub fn value(metric: impl Into<String>, unit: Unit, value: f64) -> Row {
        Row {
            metric: metric.into(),
            unit,
            edge: Some(value),
            backend: None,
            added: None,
            target: None,
            note: String::new(),
        }
    }

    /// A row comparing edge-responses with the backend alone; the
    /// difference is filled in.
    pub fn compare(metric: impl Into<String>, unit: Unit, edge: f64, backend: f64) -> Row {
        Row {
            backend: Some(backend),
            added: Some(edge - backend),
            ..Row::value(metric, unit, edge)
        }
    }

    /// A row of the three number columns as given, for a section that
    /// names its columns.
    pub fn columns(metric: impl Into<String>, unit: Unit, values: [Option<f64>; 3]) -> Row {
        let [edge, backend, added] = values;
        Row {
            edge,
            backend,
            added,
            ..Row::value(metric, unit, 0.0)
        }
    }

    /// The same row without the difference (for numbers where it means
    /// nothing, like rates).
    pub fn without_added(mut self) -> Row {
        self.added = None;
        self
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    fn cells(&self) -> [String; 7] {
        let number = |value: Option<f64>| value.map_or_else(String::new, |v| self.unit.format(v));
        let (target, result) = match &self.target {
            Some(target) => (
                target.text.clone(),
                if target.pass { "pass" } else { "MISS" }.to_owned(),
            ),
            None => (String::new(), String::new()),
        };
        [
            self.metric.clone(),
            number(self.edge),
            number(self.backend),
            number(self.added),
            target,
            result,
            self.note.clone(),
        ]
    }

    /// The row as JSON, its numbers under `keys`.
    fn to_json(&self, keys: &[String; 3]) -> Value {
        let mut row = json!({
            "metric": self.metric,
            "unit": self.unit.name(),
        });
        for (key, value) in keys.iter().zip([self.edge, self.backend, self.added]) {
            row[key.as_str()] = json!(value);
        }
        row["target"] = json!(self.target.as_ref().map(|t| &t.text));
        row["pass"] = json!(self.target.as_ref().map(|t| t.pass));
        row["note"] = json!(self.note);
        row
    }
}

/// A titled group of rows.
#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    /// Names of the three number columns, when not the default ones.
    pub columns: Option<[String; 3]>,
    pub rows: Vec<Row>,
}

impl Section {
    pub fn new(title: impl Into<String>, rows: Vec<Row>) -> Section {
        Section {
            title: title.into(),
            columns: None,
            rows,
        }
    }

    /// The same section with its number columns named `columns`.
    pub fn with_columns(mut self, columns: [String; 3]) -> Section {
        self.columns = Some(columns);
        self
    }

    /// The table headers of this section.
    fn headers(&self) -> [String; 7] {
        let mut headers = HEADERS.map(str::to_owned);
        if let Some(columns) = &self.columns {
            headers[1..4].clone_from_slice(columns);
        }
        headers
    }

    /// The JSON keys of the number columns: the headers in snake case.
    fn json_keys(&self) -> [String; 3] {
        let headers = self.headers();
        [1, 2, 3].map(|i| headers[i].replace([' ', '-'], "_"))
    }
}

/// Everything one run found.
#[derive(Debug, Clone)]
pub struct Report {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    /// Load averages when the run started.
    pub load_average: String,
    pub mode: &'static str,
    pub sections: Vec<Section>,
    /// Raw measurements, for the JSON file only.
    pub details: Value,
}

const HEADERS: [&str; 7] = [
    "metric",
    "edge-responses",
    "backend alone",
    "added",
    "target",
    "result",
    "note",
];

impl Report {
    fn header_lines(&self) -> [String; 2] {
        [
            format!("edge-responses benchmark, {} run, {}", self.mode, self.date),
            format!(
                "machine: {} ({} cores), load average at start {}",
                self.cpu, self.cores, self.load_average
            ),
        ]
    }

    /// Aligned columns for a terminal.
    pub fn to_text(&self) -> String {
        let mut widths = HEADERS.map(str::len);
        let headers = self.sections.iter().map(Section::headers);
        let cells = self.sections.iter().flat_map(|s| &s.rows).map(Row::cells);
        for line in headers.chain(cells) {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: [String; 7]| {
            let mut out = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                if i == 0 || i >= 4 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
                out.push_str("  ");
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = self.header_lines().join("\n") + "\n\n";
        out.push_str(&line(HEADERS.map(str::to_owned)));
        for section in &self.sections {
            out.push_str(&format!("-- {}\n", section.title));
            if section.columns.is_some() {
                out.push_str(&line(section.headers()));
            }
            for row in &section.rows {
                out.push_str(&line(row.cells()));
            }
        }
        out
    }

    /// One markdown table per section.
    pub fn to_markdown(&self) -> String {
        let [title, machine] = self.header_lines();
        let mut out =
            format!("# {title}\n\n{machine}\n\nRegenerate with `cargo run --release -p bench`.\n");
        for section in &self.sections {
            out.push_str(&format!("\n## {}\n\n", section.title));
            out.push_str(&format!("| {} |\n", section.headers().join(" | ")));
            out.push_str(&format!("|{}\n", " --- |".repeat(HEADERS.len())));
            for row in &section.rows {
                let cells = row.cells().map(|cell| cell.replace('|', "\\|"));
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let sections: Vec<Value> = self
            .sections
            .iter()
            .map(|section| {
                let keys = section.json_keys();
                let rows: Vec<Value> = section.rows.iter().map(|row| row.to_json(&keys)).collect();
                let mut json = json!({ "title": section.title, "rows": rows });
                if let Some(columns) = &section.columns {
                    json["columns"] = json!(columns);
                }
                json
            })
            .collect();
        json!({
            "date": self.date,
            "mode": self.mode,
            "machine": { "cpu": self.cpu, "cores": self.cores, "load_average": self.load_average },
            "sections": sections,
            "details": self.details,
        })
    }

    /// How many targets were missed.
    pub fn misses(&self) -> usize {
        self.sections
            .iter()
            .flat_map(|s| &s.rows)
            .filter(|row| row.target.as_ref().is_some_and(|t| !t.pass))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            date: "2026-01-01T00:00:00Z".into(),
            cpu: "cpu".into(),
            cores: 2,
            load_average: "0.00 0.00 0.00".into(),
            mode: "quick",
            sections: vec![
                Section::new(
                    "latency",
                    vec![
                        Row::compare("p50", Unit::Millis, 1.5, 0.25)
                            .target(Target::new("<= 1 ms", false)),
                        Row::value("size", Unit::KiB, 10.0).note("a|b"),
                    ],
                ),
                Section::new(
                    "side by side",
                    vec![Row::columns(
                        "p50",
                        Unit::Millis,
                        [Some(1.0), Some(2.0), None],
                    )],
                )
                .with_columns([
                    "edge-responses".into(),
                    "other".into(),
                    "backend alone".into(),
                ]),
            ],
            details: json!({}),
        }
    }

    #[test]
    fn renders_rows_with_differences_and_results() {
        let report = report();
        let text = report.to_text();
        assert!(text.contains("1.500 ms"), "{text}");
        assert!(text.contains("1.250 ms"), "{text}");
        assert!(text.contains("MISS"), "{text}");
        let markdown = report.to_markdown();
        assert!(markdown.contains("| p50 | 1.500 ms | 0.250 ms | 1.250 ms | <= 1 ms | MISS |"));
        assert!(markdown.contains("a\\|b"));
        let json = report.to_json();
        assert_eq!(json["sections"][0]["rows"][0]["added"], 1.25);
        assert_eq!(json["sections"][0]["rows"][0]["pass"], false);
        assert_eq!(report.misses(), 1);
    }

    #[test]
    fn a_section_names_its_own_columns() {
        let report = report();
        let markdown = report.to_markdown();
        assert!(markdown.contains("| metric | edge-responses | other | backend alone |"));
        assert!(
            markdown.contains("| p50 | 1.000 ms | 2.000 ms |  |"),
            "{markdown}"
        );
        let text = report.to_text();
        assert!(text.contains("-- side by side\nmetric"), "{text}");
        let json = report.to_json();
        let row = &json["sections"][1]["rows"][0];
        assert_eq!(
            (&row["edge_responses"], &row["other"]),
            (&json!(1.0), &json!(2.0))
        );
        assert_eq!(row["backend_alone"], Value::Null);
        assert_eq!(json["sections"][1]["columns"][1], "other");
    }

    #[test]
    fn counts_show_decimals_only_when_needed() {
        assert_eq!(format_count(4.0), "4");
        assert_eq!(format_count(4.5), "4.50");
    }
}
