//! A model of the kubelet's `$(VAR)`/`$$` expansion of container command words and env values,
//! so the invariants can check what the process finally sees.

/// What the kubelet makes of a container's command word or env value
/// (k8s.io/kubernetes third_party/forked/golang/expansion `Expand`): `$$` becomes `$`, `$(NAME)`
/// a variable's value (here a marker, so any expansion shows), anything else stays.
pub fn expand(input: &str) -> String {
    let b = input.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let (mut checkpoint, mut cursor) = (0, 0);
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.extend_from_slice(&b[checkpoint..cursor]);
            let rest = &b[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&c| c == b')') {
                    Some(close) => {
                        out.extend_from_slice(b"<expanded ");
                        out.extend_from_slice(&rest[1..close]);
                        out.push(b'>');
                        close + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                c => {
                    out.push(b'$');
                    out.push(c);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&b[checkpoint.min(b.len())..]);
    String::from_utf8(out).expect("expansion splits no UTF-8 sequence")
}

#[test]
fn the_kubelet_expansion_model() {
    for (input, want) in [
        ("a$$b", "a$b"),
        ("$(X) $$(X)", "<expanded X> $(X)"),
        ("$(unclosed", "$(unclosed"),
        ("$HOME $", "$HOME $"),
        ("é$$✓", "é$✓"),
    ] {
        assert_eq!(expand(input), want, "{input}");
    }
}
