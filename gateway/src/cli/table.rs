//! Plain-text output: tables whose columns are padded to their widest cell, and aligned
//! `name  value` lists. The last column is never padded, so lines carry no trailing blanks.

use std::io::{self, Write};

/// Writes a header line and one line per row, columns separated by two spaces.
pub fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_string()).collect();
    line(out, &widths, &header)?;
    for row in rows {
        line(out, &widths, row)?;
    }
    Ok(())
}

/// Writes `name  value` lines with the values aligned.
pub fn pairs(out: &mut dyn Write, pairs: &[(&str, String)]) -> io::Result<()> {
    let width = pairs
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    for (name, value) in pairs {
        let pad = width - name.chars().count();
        writeln!(out, "{name}{:pad$}  {value}", "")?;
    }
    Ok(())
}

fn line(out: &mut dyn Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            text.push_str(cell);
        } else {
            let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count();
            text.push_str(cell);
            text.push_str(&" ".repeat(pad + 2));
        }
    }
    writeln!(out, "{}", text.trim_end())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_trailing_blanks() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["A", "LONG HEADER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), "".into()],
                vec!["y".into(), "z".into(), "last".into()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "A          LONG HEADER  C\n\
             wide cell  x\n\
             y          z            last\n"
        );
    }

    #[test]
    fn pairs_align_values() {
        let mut out = Vec::new();
        pairs(&mut out, &[("a", "1".into()), ("longer", "2".into())]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a       1\nlonger  2\n");
    }
}
