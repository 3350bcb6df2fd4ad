//! Configuration errors that point at the offending line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A 1-based line and column in the configuration file. Line 0 means the
/// whole file, as for a file that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// Converts a byte offset into `source` to a line and a column counted in
    /// characters, as editors show them.
    pub fn from_offset(source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location { line, column }
    }

    /// Returns the same location as [`Location::from_offset`], using the
    /// byte offsets where the lines of `source` start ([`line_starts`]).
    pub(crate) fn from_line_starts(source: &str, line_starts: &[usize], offset: usize) -> Self {
        let offset = offset.min(source.len());
        let line = line_starts.partition_point(|&start| start <= offset).max(1);
        let line_start = line_starts.get(line - 1).copied().unwrap_or(0);
        let column = source
            .get(line_start..offset)
            .map_or(1, |text| text.chars().count() + 1);
        Location { line, column }
    }

    pub(crate) fn from_span(source: &str, span: Range<usize>) -> Self {
        Self::from_offset(source, span.start)
    }
}

/// Returns the byte offset where each line of `source` starts.
pub(crate) fn line_starts(source: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(source.match_indices('\n').map(|(index, _)| index + 1))
        .collect()
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(location: Location, message: impl Into<String>) -> Self {
        Diagnostic {
            location,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A configuration file that failed validation, with every problem found.
///
/// Validation keeps going after the first problem so that one run of
/// `castellan config check` lists everything to fix.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub(crate) fn new(path: &Path, diagnostics: Vec<Diagnostic>) -> Self {
        ConfigError {
            path: path.to_path_buf(),
            diagnostics,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.diagnostics.len();
        writeln!(
            f,
            "invalid configuration {}: {count} error{}",
            self.path.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for diagnostic in &self.diagnostics {
            let location = diagnostic.location;
            if location.line == 0 {
                write!(f, "{}: {}", self.path.display(), diagnostic.message)?;
            } else {
                write!(
                    f,
                    "{}:{}:{}: {}",
                    self.path.display(),
                    location.line,
                    location.column,
                    diagnostic.message
                )?;
            }
            if let Some(hint) = &diagnostic.hint {
                write!(f, "\n  hint: {hint}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_problem_has_no_position() {
        let path = Path::new("/nonexistent/castellan.toml");
        let error = crate::Config::load(path).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("/nonexistent/castellan.toml: cannot read the configuration:"),
            "{text}"
        );
        assert!(!text.contains(":0:0"), "{text}");
        assert!(text.contains("hint: run `castellan init`"), "{text}");
    }

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let source = "a = 1\nbé = 2\n";
        assert_eq!(
            Location::from_offset(source, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::from_offset(source, 6),
            Location { line: 2, column: 1 }
        );
        // 'é' is two bytes but one column.
        assert_eq!(
            Location::from_offset(source, 9),
            Location { line: 2, column: 3 }
        );
        assert_eq!(Location::from_offset(source, 999).line, 3);
    }

    #[test]
    fn line_index_matches_scan() {
        let source = "a = 1\n\nname = \"é\"\n[t]\r\nx = 2";
        let starts = line_starts(source);
        for offset in 0..=source.len() + 2 {
            if !source.is_char_boundary(offset.min(source.len())) {
                continue;
            }
            assert_eq!(
                Location::from_line_starts(source, &starts, offset),
                Location::from_offset(source, offset),
                "offset {offset}"
            );
        }
    }
}
