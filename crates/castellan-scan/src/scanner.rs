//! The scanning engine: one input in, findings out.

use std::sync::Arc;

use crate::checks::accept;
use crate::decode::{base64_runs, decode_text};
use crate::error::ScanError;
use crate::finding::{fingerprint, Finding};
use crate::lines::{column, line_around, LineIndex};
use crate::rules::{Rule, RuleSet};
use crate::secret::{redacted_preview, SecretValue};

/// Markers that suppress findings on their line, for reviewed test fixtures.
const ALLOW_MARKERS: [&[u8]; 2] = [b"castellan:allow", b"gitleaks:allow"];

/// A match before line numbers and previews: rule index and secret span.
#[derive(Debug, Clone, Copy)]
struct Hit {
    rule: usize,
    start: usize,
    end: usize,
}

/// Scans byte inputs with one compiled rule set. Cheap to clone and safe to
/// share between threads, so one instance can serve every request or file.
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: Arc<RuleSet>,
}

impl Scanner {
    pub fn new(rules: RuleSet) -> Self {
        Scanner {
            rules: Arc::new(rules),
        }
    }

    /// Builds a scanner with the built-in rules.
    pub fn builtin() -> Result<Self, ScanError> {
        Ok(Self::new(RuleSet::builtin()?))
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Returns every secret in `data`, in input order. Works on any bytes:
    /// text in any encoding, CRLF line ends and minified single-line files.
    pub fn scan_bytes(&self, data: &[u8]) -> Vec<Finding> {
        let mut hits = self.scan_layer(data);
        resolve_overlaps(&mut hits, self.rules.rules());
        let mut findings = Vec::new();
        let index = LineIndex::new_if(!hits.is_empty(), data);
        for hit in &hits {
            let secret = &data[hit.start..hit.end];
            if let Some(finding) = self.finding(data, &index, hit, secret, None) {
                findings.push(finding);
            }
        }
        self.scan_base64(data, &hits, &mut findings);
        findings.sort_by_key(|finding| (finding.start, finding.end));
        findings
    }

    fn scan_layer(&self, data: &[u8]) -> Vec<Hit> {
        let candidates = self.rules.candidates(data);
        let mut hits = Vec::new();
        for (index, rule) in self.rules.rules().iter().enumerate() {
            if !candidates.active[index] {
                continue;
            }
            if rule.generic && !rule.keywords.is_empty() {
                for (start, end) in keyword_lines(data, &candidates.hits[index]) {
                    let filter = rule.matcher().line_filter.as_ref();
                    if filter.is_some_and(|filter| !filter.is_match(&data[start..end])) {
                        continue;
                    }
                    match_rule(index, rule, data, start, end, &mut hits);
                }
            } else {
                match_rule(index, rule, data, 0, data.len(), &mut hits);
            }
        }
        hits
    }

    /// Scans decoded base64 runs that no direct finding covers; findings
    /// point at the run and carry the decoded secret.
    fn scan_base64(&self, data: &[u8], direct: &[Hit], findings: &mut Vec<Finding>) {
        let runs = base64_runs(data);
        if runs.is_empty() {
            return;
        }
        let mut index = None;
        for (start, end) in runs {
            if direct.iter().any(|hit| hit.start < end && start < hit.end) {
                continue;
            }
            let Some(decoded) = decode_text(&data[start..end]) else {
                continue;
            };
            let mut inner = self.scan_layer(&decoded);
            if inner.is_empty() {
                continue;
            }
            resolve_overlaps(&mut inner, self.rules.rules());
            let index = index.get_or_insert_with(|| LineIndex::new(data));
            for hit in inner {
                let outer = Hit {
                    rule: hit.rule,
                    start,
                    end,
                };
                let secret = &decoded[hit.start..hit.end];
                if let Some(finding) = self.finding(data, index, &outer, secret, Some("base64")) {
                    findings.push(finding);
                }
            }
        }
    }

    fn finding(
        &self,
        data: &[u8],
        index: &LineIndex,
        hit: &Hit,
        secret: &[u8],
        encoding: Option<&'static str>,
    ) -> Option<Finding> {
        let (line, line_start) = index.line_of(hit.start);
        let (_, line_end) = index.line_range(hit.start, data.len());
        if is_allowed_line(&data[line_start..line_end]) {
            return None;
        }
        let rule = &self.rules.rules()[hit.rule];
        Some(Finding {
            rule_id: rule.id.clone(),
            description: rule.description.clone(),
            line,
            column: column(data, line_start, hit.start),
            start: hit.start,
            end: hit.end,
            preview: redacted_preview(secret),
            fingerprint: fingerprint(&rule.id, secret),
            encoding,
            secret: SecretValue::new(secret),
        })
    }
}

impl LineIndex {
    fn new_if(needed: bool, data: &[u8]) -> Self {
        if needed {
            Self::new(data)
        } else {
            Self::new(&[])
        }
    }
}

fn match_rule(index: usize, rule: &Rule, data: &[u8], from: usize, to: usize, hits: &mut Vec<Hit>) {
    let matcher = rule.matcher();
    for captures in matcher.regex.captures_iter(&data[from..to]) {
        let Some((start, end)) = matcher.secret_span(&captures) else {
            continue;
        };
        if accept(rule, &captures, &data[from + start..from + end]) {
            hits.push(Hit {
                rule: index,
                start: from + start,
                end: from + end,
            });
        }
    }
}

/// Merges the lines around keyword offsets into non-overlapping ranges.
fn keyword_lines(data: &[u8], offsets: &[usize]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &offset in offsets {
        if ranges.last().is_some_and(|&(_, end)| offset < end) {
            continue;
        }
        let (start, end) = line_around(data, offset);
        match ranges.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        }
    }
    ranges
}

/// Keeps one hit per secret: a provider rule wins over a generic one, and
/// the earlier rule wins between two provider rules on the same span.
fn resolve_overlaps(hits: &mut Vec<Hit>, rules: &[Rule]) {
    hits.sort_by_key(|hit| (hit.start, rules[hit.rule].generic, hit.rule));
    let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
    for hit in hits.drain(..) {
        let overlaps = |other: &Hit| other.start < hit.end && hit.start < other.end;
        let clash = kept.iter().rposition(overlaps);
        match clash {
            None => kept.push(hit),
            Some(position) => {
                let other = kept[position];
                let same_span = other.start == hit.start && other.end == hit.end;
                let hit_wins = rules[other.rule].generic && !rules[hit.rule].generic;
                if hit_wins {
                    kept[position] = hit;
                } else if !same_span && !rules[hit.rule].generic && !rules[other.rule].generic {
                    kept.push(hit);
                }
            }
        }
    }
    *hits = kept;
}

fn is_allowed_line(line: &[u8]) -> bool {
    ALLOW_MARKERS
        .iter()
        .any(|marker| line.windows(marker.len()).any(|window| window == *marker))
}
