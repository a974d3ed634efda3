//! Minimal JSON output: string escaping and the file entry object.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Appends `s` as a JSON string literal (with quotes). Invalid UTF-8 becomes U+FFFD; control
/// characters, quote and backslash are escaped.
pub fn push_str(out: &mut String, bytes: &[u8]) {
    let s = String::from_utf8_lossy(bytes);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub fn kind(md: &Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    }
}

/// `{"name":..,"type":"file|dir|symlink|other","size":N,"mode":N,"mtime":UNIX_SECONDS}`
/// (mode = permission bits including setuid/setgid/sticky, as a decimal number).
pub fn entry(name: &[u8], md: &Metadata) -> String {
    let mut out = String::with_capacity(96);
    out.push_str("{\"name\":");
    push_str(&mut out, name);
    out.push_str(&format!(
        ",\"type\":\"{}\",\"size\":{},\"mode\":{},\"mtime\":{}}}",
        kind(md),
        md.size(),
        md.mode() & 0o7777,
        md.mtime()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(b: &[u8]) -> String {
        let mut s = String::new();
        push_str(&mut s, b);
        s
    }

    #[test]
    fn escapes_specials() {
        assert_eq!(esc(b"plain.txt"), r#""plain.txt""#);
        assert_eq!(esc(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc(b"l1\nl2\r\t"), r#""l1\nl2\r\t""#);
        assert_eq!(
            esc(b"\x00\x01\x1f\x7f\x08\x0c"),
            r#""\u0000\u0001\u001f\u007f\b\f""#
        );
        assert_eq!(esc("é✓/ü".as_bytes()), "\"é✓/ü\"");
        assert_eq!(esc("x\u{2028}y".as_bytes()), r#""x\u2028y""#);
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        assert_eq!(esc(b"a\xffb\xc3"), "\"a\u{fffd}b\u{fffd}\"");
    }

    #[test]
    fn entry_shape() {
        let dir = std::env::temp_dir();
        let md = std::fs::symlink_metadata(&dir).unwrap();
        let j = entry(b"we\"ird\n", &md);
        assert!(
            j.starts_with(r#"{"name":"we\"ird\n","type":"dir","size":"#),
            "{j}"
        );
        assert!(j.contains(",\"mode\":") && j.contains(",\"mtime\":") && j.ends_with('}'));
    }
}
