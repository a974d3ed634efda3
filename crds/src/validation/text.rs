//! Bounded text: API server fields (condition messages) and logs have size limits.

/// `s` cut to at most `max` bytes (on a character boundary), followed by `ellipsis` when cut.
pub fn truncate(s: &str, max: usize, ellipsis: &str) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(truncate("short", 10, "..."), "short");
        assert_eq!(truncate("abcdef", 3, "..."), "abc...");
        // "é" is two bytes: a cut inside it moves back to the boundary.
        assert_eq!(truncate("aé", 2, "…"), "a…");
    }
}
