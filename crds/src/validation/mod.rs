//! Validation both the operator and the gateway need, next to the API types it checks: Kubernetes
//! quantities ([`quantity`]), CIDRs ([`cidr`]), names ([`names`]) and bounded text for status
//! messages ([`text`]). The operator (`airlock_operator::{quantity, cidr}` re-export these) and the
//! gateway (`airlock_exec_gateway::validate`) call them; neither keeps its own copy.

pub mod cidr;
pub mod names;
pub mod quantity;
pub mod text;

#[cfg(test)]
mod tests {
    use super::cidr::is_cidr;
    use super::names::{is_dns_label, is_env_name, is_label_key, is_label_value};
    use super::quantity::is_quantity;

    #[test]
    fn quantities_cidrs_labels() {
        for q in [
            "1", "500m", "2", "1.5", "512Mi", "1Gi", "1e3", "1E+2", "0.5", "+1",
        ] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "m", "1.2.3", "1XB", "Gi", "1 Gi", "1e", "-1", "1ee3"] {
            assert!(!is_quantity(q), "{q}");
        }
        assert!(is_cidr("10.0.0.0/8") && is_cidr("0.0.0.0/0") && is_cidr("2001:db8::/32"));
        assert!(
            !is_cidr("10.0.0.0")
                && !is_cidr("10.0.0.0/x")
                && !is_cidr("::/129")
                && !is_cidr("1.2.3.4/08")
        );
        assert!(
            is_label_key("a")
                && is_label_key("example.com/a.b_c")
                && !is_label_key("/a")
                && !is_label_key("a/")
                && !is_label_key(&"a".repeat(64))
        );
        assert!(
            is_label_value("")
                && is_label_value("v1.2")
                && !is_label_value("-a")
                && !is_label_value("a b")
        );
        assert!(
            is_dns_label("a-1") && !is_dns_label("") && !is_dns_label("a.b") && !is_dns_label("-a")
        );
        assert!(
            is_env_name("_X1") && !is_env_name("") && !is_env_name("1X") && !is_env_name("A-B")
        );
    }
}
