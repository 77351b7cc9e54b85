//! CSV as RFC 4180 writes it: comma-separated fields, a field in double
//! quotes when it holds a comma, a quote or a line break (a quote doubled
//! inside), records ended by CRLF or LF. Used by the contacts export and
//! import.
//!
//! Invariants: parsing never panics; every record carries the 1-based line
//! it starts on, so an import can say which line it rejected.

/// One parsed record and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// 1-based line of the record's first character.
    pub line: usize,
    /// The fields.
    pub fields: Vec<String>,
}

/// Why a text is not CSV.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CsvError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole document. Empty lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Record>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        if chars.peek().is_none() {
            return Ok(out);
        }
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('"') if field.is_empty() && !quoted_field => {
                    quoted_field = true;
                    loop {
                        match chars.next() {
                            None => {
                                return Err(CsvError {
                                    line: start,
                                    message: "a quoted field is not closed".into(),
                                });
                            }
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                field.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',' | '\r' | '\n') => {}
                        Some(_) => {
                            return Err(CsvError {
                                line,
                                message: "text after a closing quote; double a quote inside a quoted field".into(),
                            });
                        }
                    }
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut field));
                    quoted_field = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some(c) => field.push(c),
            }
        }
        if !(fields.len() == 1 && fields[0].is_empty() && !quoted_field) {
            out.push(Record {
                line: start,
                fields,
            });
        }
    }
}

/// One field as written in a CSV line.
pub fn field(s: &str) -> String {
    // A leading = + - @ could be run as a formula by a spreadsheet.
    let guarded = match s.chars().next() {
        Some('=' | '+' | '-' | '@') if !looks_numeric(s) => format!("'{s}"),
        _ => s.to_owned(),
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn looks_numeric(s: &str) -> bool {
    s.len() > 1 && s[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A line of fields, ended by CRLF.
pub fn line<I: IntoIterator<Item = S>, S: AsRef<str>>(fields: I) -> String {
    let mut out = fields
        .into_iter()
        .map(|f| field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quotes_commas_and_line_breaks() {
        let r = parse("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\n\n\"two\nlines\",z\n").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].fields, ["x,1", "say \"hi\""]);
        assert_eq!(r[1].line, 2);
        assert_eq!(r[2].line, 4);
        assert_eq!(r[2].fields, ["two\nlines", "z"]);
        assert!(parse("\"open").is_err());
        assert_eq!(parse("\"a\"b").unwrap_err().line, 1);
    }

    #[test]
    fn formulas_are_not_exported_as_formulas() {
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(field("+34600000000"), "+34600000000");
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(rows in proptest::collection::vec(
            proptest::collection::vec("[a-z ,\"\n]{0,8}", 1..4), 1..5)) {
            let text: String = rows.iter().map(line).collect();
            let back = parse(&text).unwrap();
            let expected: Vec<_> = rows.iter().filter(|r| !(r.len() == 1 && r[0].is_empty())).cloned().collect();
            prop_assert_eq!(back.into_iter().map(|r| r.fields).collect::<Vec<_>>(), expected);
        }
    }
}
