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

/// Maximum number of bytes between two keyword lines for which a
/// line-local rule searches both, and the lines between, in one regex call.
/// Each call has a fixed cost, so a short gap is cheaper to search than to
/// skip with a second call. The value is a guess and was not tuned.
const LINE_LOCAL_MAX_GAP: usize = 4096;

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
                for (start, end) in keyword_lines(data, &candidates.hits[index], 0) {
                    let filter = rule.matcher().line_filter.as_ref();
                    if filter.is_some_and(|filter| !filter.is_match(&data[start..end])) {
                        continue;
                    }
                    match_rule(index, rule, data, start, end, &mut hits);
                }
            } else if rule.searches_keyword_lines() {
                let offsets = &candidates.hits[index];
                for (start, end) in keyword_lines(data, offsets, LINE_LOCAL_MAX_GAP) {
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

/// Merges the lines around keyword offsets into non-overlapping ranges,
/// also joining two ranges when at most `max_gap` bytes lie between them.
/// Each range starts at the start of a line and ends at the end of one.
fn keyword_lines(data: &[u8], offsets: &[usize], max_gap: usize) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &offset in offsets {
        if ranges.last().is_some_and(|&(_, end)| offset < end) {
            continue;
        }
        let (start, end) = line_around(data, offset);
        match ranges.last_mut() {
            Some(last) if start <= last.1.saturating_add(max_gap) => last.1 = last.1.max(end),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns every corpus file, whole.
    fn corpus_files() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let mut files = Vec::new();
        for directory in ["positive", "negative"] {
            let entries = std::fs::read_dir(root.join(directory)).expect("corpus directory");
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                files.push(std::fs::read(&path).expect("corpus file"));
            }
        }
        files
    }

    /// Builds inputs with URL credentials and keys at line starts and ends,
    /// next to CR, tabs and quotes, several on one line, and far apart.
    fn edge_case_inputs() -> Vec<Vec<u8>> {
        let url = "https://deploy:Zq8vN3xK2pL7@git.internal.acme.io/repo";
        let postgres = "postgresql://app:Pg9rT4wQ7zK1@db.acme.io:5432/main";
        let aws = "AKIAQ7XZ4KD2N5R3W6YB";
        let mailgun = "key-3f9a1c7e5b2d4086a9c1e7f3b5d20468";
        let filler = "let value = compute(input);\n".repeat(300);
        [
            format!("{url}\n{postgres}\r\n{aws}\n{mailgun}"),
            format!("\"{url}\" '{postgres}'\t{aws},{mailgun};{url} {url}\n"),
            format!("a {url}\r\n{filler}b {postgres} {filler}\n{aws}{filler}{mailgun}"),
            format!("{filler}mysql://root:My5qlR00tPw9@localhost/app\n{filler}"),
            "x=ASIAQ7XZ4KD2N5R3W6YB\ny=redis://:R3disPassw0rd9@cache:6379\n".to_string(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect()
    }

    /// Checks that a line-local rule finds the same spans in the lines
    /// around its keywords as in the whole input.
    #[test]
    fn line_local_rules_match_as_on_whole_input() {
        let scanner = Scanner::builtin().expect("built-in rules compile");
        let rules = scanner.rules().rules();
        let line_local: Vec<usize> = (0..rules.len())
            .filter(|&index| rules[index].line_local)
            .collect();
        assert!(
            line_local.len() >= 8,
            "{} line-local rules",
            line_local.len()
        );
        let mut inputs = corpus_files();
        inputs.extend(edge_case_inputs());
        let mut total = 0;
        for data in &inputs {
            let candidates = scanner.rules().candidates(data);
            for &index in &line_local {
                let rule = &rules[index];
                let mut whole = Vec::new();
                match_rule(index, rule, data, 0, data.len(), &mut whole);
                let mut local = Vec::new();
                let offsets = &candidates.hits[index];
                for (start, end) in keyword_lines(data, offsets, LINE_LOCAL_MAX_GAP) {
                    match_rule(index, rule, data, start, end, &mut local);
                }
                let spans = |hits: &[Hit]| -> Vec<(usize, usize)> {
                    hits.iter().map(|hit| (hit.start, hit.end)).collect()
                };
                assert_eq!(spans(&local), spans(&whole), "rule {}", rule.id);
                total += whole.len();
            }
        }
        assert!(
            total >= 15,
            "only {total} matches: the inputs test too little"
        );
    }

    #[test]
    fn keyword_lines_join_close_lines() {
        let data = b"one key\ntwo\nthree key\n\nfour\nfive key";
        let offsets = [4, 18, 34];
        assert_eq!(
            keyword_lines(data, &offsets, 0),
            vec![(0, 7), (12, 21), (28, 36)]
        );
        assert_eq!(keyword_lines(data, &offsets, 5), vec![(0, 21), (28, 36)]);
        assert_eq!(keyword_lines(data, &offsets, 100), vec![(0, 36)]);
    }

    #[test]
    fn changed_keywords_turn_off_line_local() {
        let mut specs = crate::rules::builtin_specs();
        let url = specs
            .iter_mut()
            .find(|spec| spec.id == "url-credentials")
            .expect("url-credentials rule exists");
        url.keywords = vec!["deploy".into()];
        let set = RuleSet::from_specs(specs).expect("compiles");
        let rule = set.rules().iter().find(|rule| rule.id == "url-credentials");
        assert!(rule.is_some_and(|rule| !rule.line_local));
        let builtin = RuleSet::builtin().expect("built-in rules compile");
        let rule = builtin
            .rules()
            .iter()
            .find(|rule| rule.id == "url-credentials");
        assert!(rule.is_some_and(|rule| rule.line_local));
    }
}
