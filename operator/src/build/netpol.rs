//! Sandbox -> NetworkPolicy. Every sandbox gets its own policy selecting only its pod: ingress is
//! denied except, with the direct path, the agent port from the gateway's and operator's pods
//! (label `airlock.dev/agent-client=true` in their namespace); egress is what `spec.network` asks
//! for and nothing else; and the namespace's default-deny policy every sandbox pod is under from
//! its first instant.
//!
//! Over 600 lines: the builders are under 260; the rest is their tests, one per egress mode.

use std::collections::BTreeMap;

use airlock_crds::{EgressMode, Sandbox, labels};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{BuildError, child_meta};
use crate::cidr::Cidr;
use crate::config::{Config, DirectAgent, DnsConfig};

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
/// IPv6 ranges `egress: Internet` never reaches: unique-local, link-local, and the ranges that
/// lead back into IPv4 — NAT64 (well-known and local-use prefixes) and IPv4-mapped addresses —
/// through which the IPv4 exceptions could otherwise be reached.
pub const BLOCKED_V6: &[&str] = &[
    "fc00::/7",
    "fe80::/10",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
];

/// The sandbox's NetworkPolicy (same name as the sandbox).
pub fn network_policy(sandbox: &Sandbox, config: &Config) -> Result<NetworkPolicy, BuildError> {
    let name = sandbox.name_any();
    let network = &sandbox.spec.network;
    let mut egress = match network.egress {
        EgressMode::None => Vec::new(),
        EgressMode::Internet => vec![internet_rule(config)],
        EgressMode::AllowList => network
            .allow
            .iter()
            // An entry inside the deny-list (refused for a new sandbox; possible for one that
            // was running when the list changed) allows nothing.
            .filter_map(|a| Some((a, denied_inside(&a.cidr, &config.egress_deny)?)))
            .map(|(a, except)| NetworkPolicyEgressRule {
                to: Some(vec![ip_block(&a.cidr, except)]),
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
        egress.push(dns_rule(&config.dns));
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
            ingress: config.direct.as_ref().map(|d| vec![agent_rule(d)]),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    })
}

/// The namespace's default-deny policy ([`labels::SANDBOX_PODS_POLICY`], owned by no Sandbox so
/// that it outlives them all): it selects every sandbox pod the operator makes (component
/// `sandbox`, managed by the operator; pool pods too) and allows nothing in either direction.
/// Policies add up, so a sandbox pod gets exactly what its own policy allows once that exists,
/// and nothing before: the pod can be created alongside its own policy, never unfenced.
pub fn namespace_fence(namespace: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: namespace_policy_meta(namespace, labels::SANDBOX_PODS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (labels::COMPONENT.to_string(), labels::COMPONENT_SANDBOX.to_string()),
                    (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_OPERATOR.to_string()),
                ])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// Metadata of a per-namespace policy of the operator (owned by nothing, labelled as the
/// operator's so that its metadata watch sees it).
pub(crate) fn namespace_policy_meta(
    namespace: &str,
    name: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(BTreeMap::from([(
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_OPERATOR.to_string(),
        )])),
        ..Default::default()
    }
}

/// The agent port, from the agent clients only: pods labelled `airlock.dev/agent-client=true` in
/// the release namespace (a namespace and pod selector in one peer: both must match).
pub(crate) fn agent_rule(direct: &DirectAgent) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    direct.client_namespace.clone(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    labels::AGENT_CLIENT.to_string(),
                    "true".to_string(),
                )])),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(vec![port(direct.port.into(), "TCP")]),
    }
}

/// Everything on the internet, IPv4 and IPv6, except internal ranges, the cluster's own CIDRs and
/// the egress deny-list.
fn internet_rule(config: &Config) -> NetworkPolicyEgressRule {
    let mut except_v4: Vec<String> = BLOCKED_V4.iter().map(|s| s.to_string()).collect();
    let mut except_v6: Vec<String> = BLOCKED_V6.iter().map(|s| s.to_string()).collect();
    let denied = config
        .egress_deny
        .iter()
        .map(|c| (c.is_ipv6(), c.to_string()));
    let cluster = config
        .cluster_cidrs
        .iter()
        .map(|c| (c.contains(':'), c.clone()));
    for (v6, c) in cluster.chain(denied) {
        let list = if v6 { &mut except_v6 } else { &mut except_v4 };
        if !list.contains(&c) {
            list.push(c);
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

/// The deny-listed ranges strictly inside an `AllowList` entry, as its exceptions (an ipBlock's
/// `except` must lie inside its `cidr`); `None` when the entry lies inside a denied range.
/// Validation has checked that the entry parses; one that does not allows nothing (fail closed).
fn denied_inside(cidr: &str, deny: &[Cidr]) -> Option<Vec<String>> {
    let Ok(entry) = Cidr::parse(cidr) else {
        return None;
    };
    if deny.iter().any(|d| d.contains(&entry)) {
        return None;
    }
    let mut except: Vec<String> = Vec::new();
    for d in deny.iter().filter(|d| entry.contains(d) && **d != entry) {
        // A range inside another exception adds nothing.
        if deny
            .iter()
            .any(|o| o != d && o.contains(d) && entry.contains(o) && *o != entry)
        {
            continue;
        }
        let d = d.to_string();
        if !except.contains(&d) {
            except.push(d);
        }
    }
    Some(except)
}

/// DNS through the cluster DNS only: UDP and TCP 53 to the DNS pods (`--dns-namespace`,
/// `--dns-pod-selector`) and to the `--dns-cidr` ranges, nowhere else.
fn dns_rule(dns: &DnsConfig) -> NetworkPolicyEgressRule {
    let mut to = vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                dns.namespace.clone(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(dns.pod_selector.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    }];
    to.extend(
        dns.cidrs
            .iter()
            .map(|c| ip_block(&c.to_string(), Vec::new())),
    );
    NetworkPolicyEgressRule {
        to: Some(to),
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

    #[test]
    fn ingress_is_denied_and_with_the_direct_path_only_the_agent_port_from_agent_clients() {
        let np = build(MINIMAL);
        let spec = np.spec.as_ref().unwrap();
        assert_eq!(spec.ingress, None, "no ingress rule: nothing may connect");
        assert!(spec.policy_types.as_ref().unwrap().contains(&"Ingress".to_string()));

        let np = network_policy(&sandbox(MINIMAL), &Config::with_direct()).unwrap();
        let ingress = np.spec.as_ref().unwrap().ingress.as_ref().unwrap();
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1, "one peer: namespace AND pod selector");
        let peer = &from[0];
        assert_eq!(peer.ip_block, None);
        assert_eq!(
            peer.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap(),
            &BTreeMap::from([("kubernetes.io/metadata.name".to_string(), "airlock-system".to_string())])
        );
        assert_eq!(
            peer.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap(),
            &BTreeMap::from([("airlock.dev/agent-client".to_string(), "true".to_string())])
        );
        let ports = ingress[0].ports.as_ref().unwrap();
        assert_eq!(ports, &vec![port(7070, "TCP")]);
        assert_no_empty_lists(&serde_json::to_value(&np).unwrap(), "");
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
    fn the_namespace_fence_selects_every_sandbox_pod_and_allows_nothing() {
        let np = namespace_fence("team-a");
        let expected: NetworkPolicy = serde_yaml::from_str(
            r#"
metadata:
  name: airlock.sandbox-pods
  namespace: team-a
  labels: {app.kubernetes.io/managed-by: airlock-operator}
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/component: sandbox, app.kubernetes.io/managed-by: airlock-operator}
  policyTypes: [Ingress, Egress]
"#,
        )
        .unwrap();
        assert_eq!(np, expected);
        // It selects the pods the operator builds (and pool pods, which keep these labels).
        let s = crate::build::fixtures::sandbox(crate::build::fixtures::MINIMAL);
        let pod_labels = crate::build::child_labels(&s.name_any());
        for (k, v) in np.spec.unwrap().pod_selector.unwrap().match_labels.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v), "{k}");
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
        let config = Config::from_flags(&["--allowed-runtime-classes=gvisor"]);
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
                "10.244.0.0/16",
                "169.254.169.254/32"
            ]
        );
        let v6 = block(&rules[0], 1);
        assert_eq!(v6.cidr, "::/0");
        assert_eq!(
            v6.except.as_ref().unwrap(),
            &[
                "fc00::/7",
                "fe80::/10",
                "64:ff9b::/96",
                "64:ff9b:1::/48",
                "fd00:ec2::254/128"
            ]
        );
    }

    #[test]
    fn egress_internet_excludes_the_configured_deny_list() {
        let config = Config::from_flags(&["--egress-deny-cidr=198.51.100.0/24,2001:db8:1::/48"]);
        let np =
            network_policy(&sandbox(&with_network("    egress: Internet\n")), &config).unwrap();
        let rules = egress(&np);
        let v4 = block(&rules[0], 0).except.as_ref().unwrap();
        assert!(v4.contains(&"198.51.100.0/24".to_string()), "{v4:?}");
        assert!(
            !v4.contains(&"169.254.169.254/32".to_string()),
            "the flag replaces the default list"
        );
        assert!(v4.contains(&"169.254.0.0/16".to_string()), "always blocked");
        let v6 = block(&rules[0], 1).except.as_ref().unwrap();
        assert!(v6.contains(&"2001:db8:1::/48".to_string()), "{v6:?}");
        assert!(v6.contains(&"64:ff9b::/96".to_string()), "{v6:?}");
    }

    #[test]
    fn allow_list_entries_get_the_denied_ranges_inside_them_as_exceptions() {
        let np = build(&with_network(
            "    egress: AllowList\n    allow:\n      - cidr: 0.0.0.0/0\n      - cidr: 169.0.0.0/8\n      - cidr: fd00::/8\n      - cidr: 203.0.113.0/24\n      - cidr: ::/0\n",
        ));
        let rules = egress(&np);
        assert_eq!(rules.len(), 5);
        // Nested denied ranges collapse into the outer one (169.254.169.254/32 is inside
        // 169.254.0.0/16).
        let all = block(&rules[0], 0);
        assert_eq!(
            all.except.as_ref().unwrap(),
            &["169.254.0.0/16", "10.96.0.0/12", "10.244.0.0/16"]
        );
        assert_eq!(
            block(&rules[1], 0).except.as_ref().unwrap(),
            &["169.254.0.0/16"]
        );
        assert_eq!(
            block(&rules[2], 0).except.as_ref().unwrap(),
            &["fd00:ec2::254/128"]
        );
        assert_eq!(block(&rules[3], 0).except, None, "nothing denied inside");
        assert_eq!(
            block(&rules[4], 0).except.as_ref().unwrap(),
            &[
                "fd00:ec2::254/128",
                "fe80::/10",
                "64:ff9b::/96",
                "64:ff9b:1::/48"
            ]
        );
        // Every exception lies inside its cidr, as the API server requires.
        for r in rules {
            let b = block(r, 0);
            let outer = Cidr::parse(&b.cidr).unwrap();
            for e in b.except.iter().flatten() {
                assert!(
                    outer.contains(&Cidr::parse(e).unwrap()),
                    "{e} in {}",
                    b.cidr
                );
            }
        }
    }

    #[test]
    fn allow_list_entries_inside_the_deny_list_allow_nothing() {
        // Refused for a new sandbox; a running one keeps its pod but loses the destination.
        let np = build(&with_network(
            "    egress: AllowList\n    allow:\n      - cidr: 169.254.169.254/32\n      - cidr: 203.0.113.0/24\n",
        ));
        let rules = egress(&np);
        assert_eq!(rules.len(), 1);
        assert_eq!(block(&rules[0], 0).cidr, "203.0.113.0/24");
    }

    #[test]
    fn dns_goes_to_the_configured_dns_servers_only() {
        let config = Config::from_flags(&[
            "--dns-namespace=dns-system",
            "--dns-pod-selector=app=coredns,tier=dns",
            "--dns-cidr=169.254.20.10/32",
        ]);
        let np = network_policy(
            &sandbox(&with_network("    egress: None\n    dns: true\n")),
            &config,
        )
        .unwrap();
        let rules = egress(&np);
        assert_eq!(rules.len(), 1);
        let to = rules[0].to.as_ref().unwrap();
        assert_eq!(to.len(), 2);
        assert_eq!(
            to[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "dns-system"
        );
        assert_eq!(
            to[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &BTreeMap::from([
                ("app".to_string(), "coredns".to_string()),
                ("tier".to_string(), "dns".to_string())
            ])
        );
        assert_eq!(to[0].ip_block, None, "no ipBlock beside the selectors");
        assert_eq!(block(&rules[0], 1).cidr, "169.254.20.10/32");
        assert_eq!(rules[0].ports.as_ref().unwrap().len(), 2, "port 53 only");
    }

    #[test]
    fn egress_internet_with_configured_ipv6_cluster_range_and_dns() {
        let config = Config::from_flags(&["--cluster-cidr=10.42.0.0/16,fd12:3456::/48"]);
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
        assert!(
            block(&rules[0], 1)
                .except
                .as_ref()
                .unwrap()
                .contains(&"fd12:3456::/48".to_string())
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
