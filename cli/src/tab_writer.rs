//! Tab-aligned columns as Go's `text/tabwriter` prints them with Hubble's
//! settings (minimum width 2, padding 3, spaces): every tab-terminated cell
//! is padded to its column's widest cell plus 3; the text after a line's last
//! tab is not aligned. Rows are kept until [`TabWriter::flush`], as in Go.

use std::io::{self, Write};

/// Collects rows and writes them aligned on `flush`.
#[derive(Debug, Default)]
pub(crate) struct TabWriter {
    rows: Vec<Vec<String>>,
}

const MIN_WIDTH: usize = 2;
const PADDING: usize = 3;

impl TabWriter {
    /// Adds a row; every cell but the last is aligned.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Writes the rows kept so far and forgets them.
    pub(crate) fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![MIN_WIDTH; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
                widths[i] = widths[i].max(cell.chars().count() + PADDING);
            }
        }
        let mut text = String::new();
        for row in self.rows.drain(..) {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.into_iter().enumerate() {
                text.push_str(&cell);
                if i < last {
                    let pad = widths[i] - cell.chars().count();
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_widest_cell_plus_three() {
        let mut tw = TabWriter::default();
        tw.row(vec!["NAME".into(), "STATUS".into(), "AGE".into()]);
        tw.row(vec!["c1/n1".into(), "Connected".into(), "5s".into()]);
        tw.row(vec!["".into(), "x".into(), "".into()]);
        let mut out = Vec::new();
        tw.flush(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME    STATUS      AGE\nc1/n1   Connected   5s\n        x           \n"
        );
    }
}
