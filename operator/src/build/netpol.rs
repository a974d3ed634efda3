//! Sandbox -> NetworkPolicy. Every sandbox gets its own policy selecting only its pod: ingress is
//! always denied (no ingress rules), egress is what `spec.network` asks for and nothing else.

use std::collections::BTreeMap;

use airlock_crds::{EgressMode, Sandbox, labels};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{BuildError, child_meta};
use crate::config::Config;

/// IPv4 ranges `egress: Internet` never reaches: private (RFC 1918), link-local (cloud metadata
/// endpoints live at 169.254.169.254), CGNAT and loopback.
pub const BLOCKED_V4: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
];
/// IPv6 ranges `egress: Internet` never reaches: unique-local and link-local.
pub const BLOCKED_V6: &[&str] = &["fc00::/7", "fe80::/10"];

/// The sandbox's NetworkPolicy (same name as the sandbox).
pub fn network_policy(sandbox: &Sandbox, config: &Config) -> Result<NetworkPolicy, BuildError> {
    let name = sandbox.name_any();
    let network = &sandbox.spec.network;
    let mut egress = match network.egress {
        EgressMode::None => Vec::new(),
        EgressMode::Internet => vec![internet_rule(&config.cluster_cidrs)],
        EgressMode::AllowList => network
            .allow
            .iter()
            .map(|a| NetworkPolicyEgressRule {
                to: Some(vec![ip_block(&a.cidr, Vec::new())]),
                ports: (!a.ports.is_empty()).then(|| {
                    a.ports
                        .iter()
                        .map(|p| port(p.port, p.protocol.as_str()))
                        .collect()
                }),
            })
            .collect(),
    };
    if network.dns {
        egress.push(dns_rule());
    }
    Ok(NetworkPolicy {
        metadata: child_meta(sandbox, name.clone())?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(labels::SANDBOX_NAME.to_string(), name)])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            // Empty lists are left out rather than sent as `[]`: the API server stores an empty
            // list as absent, so applying `[]` would change the object (and bump its generation,
            // and trigger a reconcile) on every apply. Absent rules with both policy types listed
            // mean: nothing allowed.
            ingress: None,
            egress: (!egress.is_empty()).then_some(egress),
        }),
    })
}

/// Everything on the internet, IPv4 and IPv6, except internal ranges and the cluster's own CIDRs.
fn internet_rule(cluster_cidrs: &[String]) -> NetworkPolicyEgressRule {
    let mut except_v4: Vec<String> = BLOCKED_V4.iter().map(|s| s.to_string()).collect();
    let mut except_v6: Vec<String> = BLOCKED_V6.iter().map(|s| s.to_string()).collect();
    for c in cluster_cidrs {
        let list = if c.contains(':') {
            &mut except_v6
        } else {
            &mut except_v4
        };
        if !list.contains(c) {
            list.push(c.clone());
        }
    }
    NetworkPolicyEgressRule {
        to: Some(vec![
            ip_block("0.0.0.0/0", except_v4),
            ip_block("::/0", except_v6),
        ]),
        ports: None,
    }
}

/// DNS through the cluster DNS pods: UDP and TCP 53 to `k8s-app=kube-dns` in `kube-system`.
fn dns_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".into(),
                    "kube-system".into(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".into(), "kube-dns".into())])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
    }
}

fn ip_block(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then_some(except),
        }),
        namespace_selector: None,
        pod_selector: None,
    }
}

fn port(port: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_string()),
        end_port: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::*;

    fn build(yaml: &str) -> NetworkPolicy {
        network_policy(&sandbox(yaml), &Config::defaults()).unwrap()
    }

    fn egress(np: &NetworkPolicy) -> &[NetworkPolicyEgressRule] {
        np.spec
            .as_ref()
            .unwrap()
            .egress
            .as_deref()
            .unwrap_or_default()
    }

    /// Server-side apply must not send empty lists (see `network_policy`).
    fn assert_no_empty_lists(v: &serde_json::Value, path: &str) {
        match v {
            serde_json::Value::Array(a) => {
                assert!(!a.is_empty(), "empty list at {path}");
                for (i, x) in a.iter().enumerate() {
                    assert_no_empty_lists(x, &format!("{path}[{i}]"));
                }
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    assert_no_empty_lists(x, &format!("{path}.{k}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_empty_lists_in_any_mode() {
        for network in [
            "",
            "  network:\n    egress: None\n",
            "  network:\n    egress: Internet\n",
        ] {
            let np = build(&format!("{MINIMAL}{network}"));
            assert_no_empty_lists(&serde_json::to_value(&np).unwrap(), "");
        }
        assert_no_empty_lists(&serde_json::to_value(build(FULL)).unwrap(), "");
        let config = Config::defaults();
        let s = sandbox(FULL);
        let plan = crate::reconcile::validate::validate(&s, &config).unwrap();
        let pod = crate::build::pod(&s, &plan, &config).unwrap();
        assert_no_empty_lists(&serde_json::to_value(pod).unwrap(), "");
    }

    fn block(rule: &NetworkPolicyEgressRule, i: usize) -> &IPBlock {
        rule.to.as_ref().unwrap()[i].ip_block.as_ref().unwrap()
    }

    fn with_network(network: &str) -> String {
        format!("{MINIMAL}  network:\n{network}")
    }

    #[test]
    fn selects_only_its_pod_and_denies_ingress() {
        let np = build(MINIMAL);
        assert_eq!(np.metadata.name.as_deref(), Some("sbx-1"));
        assert_eq!(np.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(np.labels()["airlock.dev/sandbox"], "sbx-1");
        assert_eq!(np.owner_references()[0].controller, Some(true));
        let spec = np.spec.as_ref().unwrap();
        let sel = spec.pod_selector.as_ref().unwrap();
        assert_eq!(
            sel.match_labels.as_ref().unwrap(),
            &BTreeMap::from([("airlock.dev/sandbox".into(), "sbx-1".into())])
        );
        assert_eq!(sel.match_expressions, None);
        assert_eq!(spec.policy_types.as_ref().unwrap(), &["Ingress", "Egress"]);
        assert!(
            spec.ingress.as_ref().is_none_or(|i| i.is_empty()),
            "no ingress rule at all"
        );
    }

    #[test]
    fn egress_none_allows_nothing() {
        assert!(egress(&build(MINIMAL)).is_empty());
        assert!(egress(&build(&with_network("    egress: None\n"))).is_empty());
    }

    #[test]
    fn egress_none_with_dns_allows_only_dns() {
        let np = build(&with_network("    egress: None\n    dns: true\n"));
        let rules = egress(&np);
        assert_eq!(rules.len(), 1);
        let peer = &rules[0].to.as_ref().unwrap()[0];
        assert_eq!(peer.ip_block, None);
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "kube-system"
        );
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["k8s-app"],
            "kube-dns"
        );
        let ports: Vec<_> = rules[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.port.clone().unwrap(), p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(
            ports,
            [
                (IntOrString::Int(53), "UDP".into()),
                (IntOrString::Int(53), "TCP".into())
            ]
        );
    }

    #[test]
    fn egress_internet_excludes_internal_and_cluster_ranges() {
        let np = build(&with_network("    egress: Internet\n"));
        let rules = egress(&np);
        assert_eq!(rules.len(), 1, "no DNS rule unless asked");
        assert_eq!(rules[0].ports, None, "all ports");
        let v4 = block(&rules[0], 0);
        assert_eq!(v4.cidr, "0.0.0.0/0");
        assert_eq!(
            v4.except.as_ref().unwrap(),
            &[
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "10.96.0.0/12",
                "10.244.0.0/16"
            ]
        );
        let v6 = block(&rules[0], 1);
        assert_eq!(v6.cidr, "::/0");
        assert_eq!(v6.except.as_ref().unwrap(), &["fc00::/7", "fe80::/10"]);
    }

    #[test]
    fn egress_internet_with_configured_ipv6_cluster_range_and_dns() {
        let mut config = Config::defaults();
        config.cluster_cidrs = vec!["10.42.0.0/16".into(), "fd12:3456::/48".into()];
        let np = network_policy(
            &sandbox(&with_network("    egress: Internet\n    dns: true\n")),
            &config,
        )
        .unwrap();
        let rules = egress(&np);
        assert_eq!(rules.len(), 2);
        assert!(
            block(&rules[0], 0)
                .except
                .as_ref()
                .unwrap()
                .contains(&"10.42.0.0/16".to_string())
        );
        assert!(
            !block(&rules[0], 0)
                .except
                .as_ref()
                .unwrap()
                .contains(&"10.96.0.0/12".to_string())
        );
        assert_eq!(
            block(&rules[0], 1).except.as_ref().unwrap().last().unwrap(),
            "fd12:3456::/48"
        );
        assert_eq!(rules[1].ports.as_ref().unwrap().len(), 2, "DNS rule last");
    }

    #[test]
    fn egress_allow_list_has_one_rule_per_destination() {
        let np = build(FULL);
        let rules = egress(&np);
        assert_eq!(rules.len(), 3, "two destinations + DNS");
        let b = block(&rules[0], 0);
        assert_eq!(
            (b.cidr.as_str(), b.except.as_ref()),
            ("203.0.113.0/24", None)
        );
        let ports = rules[0].ports.as_ref().unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (ports[0].port.clone(), ports[0].protocol.as_deref()),
            (Some(IntOrString::Int(443)), Some("TCP"))
        );
        assert_eq!(
            (ports[1].port.clone(), ports[1].protocol.as_deref()),
            (Some(IntOrString::Int(53)), Some("UDP"))
        );
        assert_eq!(block(&rules[1], 0).cidr, "2001:db8::/32");
        assert_eq!(rules[1].ports, None, "no ports listed = every port");
        assert!(
            rules[2].to.as_ref().unwrap()[0]
                .namespace_selector
                .is_some(),
            "DNS rule"
        );
    }
}
