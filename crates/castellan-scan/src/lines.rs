//! Byte offsets to 1-based lines and columns.

/// Newline offsets of one input, computed once per input with findings.
pub(crate) struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(data: &[u8]) -> Self {
        let newlines = data
            .iter()
            .enumerate()
            .filter(|(_, &byte)| byte == b'\n')
            .map(|(offset, _)| offset)
            .collect();
        LineIndex { newlines }
    }

    /// Returns the 1-based line and the byte offset where it starts.
    pub(crate) fn line_of(&self, offset: usize) -> (usize, usize) {
        let before = self.newlines.partition_point(|&newline| newline < offset);
        let start = if before == 0 {
            0
        } else {
            self.newlines[before - 1] + 1
        };
        (before + 1, start)
    }

    /// Returns the byte range of the line containing `offset`, without its newline.
    pub(crate) fn line_range(&self, offset: usize, len: usize) -> (usize, usize) {
        let (line, start) = self.line_of(offset);
        let end = self.newlines.get(line - 1).copied().unwrap_or(len);
        (start, end)
    }
}

/// Returns the 1-based column of `offset` in code points, counting invalid
/// UTF-8 bytes one each.
pub(crate) fn column(data: &[u8], line_start: usize, offset: usize) -> usize {
    let continuation = |byte: &&u8| (0x80..0xC0).contains(*byte);
    data[line_start..offset]
        .iter()
        .filter(|byte| !continuation(byte))
        .count()
        + 1
}

/// Returns the byte range of the line containing `offset`, scanning from it.
pub(crate) fn line_around(data: &[u8], offset: usize) -> (usize, usize) {
    let start = data[..offset]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let end = data[offset..]
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(data.len(), |newline| offset + newline);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_of_offsets() {
        let data = "ab\r\ncé x\nlast".as_bytes();
        let index = LineIndex::new(data);
        let cases = [(0, 1, 1), (1, 1, 2), (4, 2, 1), (8, 2, 4), (10, 3, 1)];
        for (offset, line, col) in cases {
            let (got_line, start) = index.line_of(offset);
            assert_eq!(got_line, line, "line of {offset}");
            assert_eq!(column(data, start, offset), col, "column of {offset}");
        }
        assert_eq!(index.line_range(5, data.len()), (4, 9));
        assert_eq!(line_around(data, 5), (4, 9));
        assert_eq!(line_around(data, 11), (10, 14));
    }
}
