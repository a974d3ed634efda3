//! What must hold of the NetworkPolicy built from any Sandbox.

use super::*;

pub(crate) fn is_dns_rule(r: &NetworkPolicyEgressRule) -> bool {
    let Some(to) = &r.to else { return false };
    let ports: Vec<(Option<&IntOrString>, Option<&str>)> = r
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port.as_ref(), p.protocol.as_deref()))
        .collect();
    to.len() == 1
        && to[0].ip_block.is_none()
        && to[0]
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| {
                m.len() == 1
                    && m.get("kubernetes.io/metadata.name").map(String::as_str)
                        == Some("kube-system")
            })
        && to[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| {
                m.len() == 1 && m.get("k8s-app").map(String::as_str) == Some("kube-dns")
            })
        && ports
            == [
                (Some(&IntOrString::Int(53)), Some("UDP")),
                (Some(&IntOrString::Int(53)), Some("TCP")),
            ]
}

pub(crate) fn check_netpol(
    s: &Sandbox,
    config: &Config,
    np: &NetworkPolicy,
    stats: &mut Stats,
) -> Result<(), String> {
    let name = s.name_any();
    let value = serde_json::to_value(np).map_err(|e| format!("netpol does not serialize: {e}"))?;
    no_empty_lists(&value, "networkPolicy")?;
    let spec = np.spec.as_ref().ok_or("netpol without spec")?;
    ensure(
        spec.policy_types.as_deref() == Some(&["Ingress".to_string(), "Egress".to_string()][..]),
        "policyTypes is not [Ingress, Egress]",
    )?;
    ensure(
        spec.ingress.as_ref().is_none_or(|i| i.is_empty()),
        "ingress rules present",
    )?;
    let sel = spec.pod_selector.as_ref().ok_or("no podSelector")?;
    ensure(
        sel.match_expressions.is_none()
            && sel.match_labels
                == Some(BTreeMap::from([(
                    labels::SANDBOX_NAME.to_string(),
                    name.clone(),
                )])),
        "podSelector does not select exactly this sandbox",
    )?;
    ensure(
        np.metadata.namespace == s.metadata.namespace,
        "netpol namespace",
    )?;
    let rules = spec.egress.as_deref().unwrap_or_default();
    let net = &s.spec.network;
    let (dns_rules, other): (Vec<_>, Vec<_>) = rules.iter().partition(|r| is_dns_rule(r));
    ensure(
        dns_rules.len() == usize::from(net.dns),
        "DNS rule present iff spec.network.dns",
    )?;
    if net.dns {
        ensure(is_dns_rule(rules.last().unwrap()), "DNS rule is not last")?;
    }
    match net.egress {
        EgressMode::None => {
            *stats.egress.entry("None").or_default() += 1;
            ensure(other.is_empty(), "egress None allows more than DNS")?;
        }
        EgressMode::Internet => {
            *stats.egress.entry("Internet").or_default() += 1;
            ensure(other.len() == 1, "egress Internet: one rule")?;
            let r = other[0];
            ensure(r.ports.is_none(), "egress Internet: all ports")?;
            let to = r.to.as_deref().unwrap_or_default();
            ensure(to.len() == 2, "egress Internet: two ip blocks")?;
            for (peer, all, blocked, v6) in [
                (&to[0], "0.0.0.0/0", BLOCKED_V4, false),
                (&to[1], "::/0", BLOCKED_V6, true),
            ] {
                let b = peer
                    .ip_block
                    .as_ref()
                    .ok_or("egress Internet: no ipBlock")?;
                ensure(
                    peer.namespace_selector.is_none() && peer.pod_selector.is_none(),
                    "selector next to ipBlock",
                )?;
                ensure(b.cidr == all, "egress Internet: block cidr")?;
                let except = b.except.as_deref().unwrap_or_default();
                for x in blocked {
                    ensure(
                        except.iter().any(|e| e == x),
                        &format!("egress Internet does not exclude {x}"),
                    )?;
                }
                for c in &config.cluster_cidrs {
                    if c.contains(':') == v6 {
                        ensure(
                            except.contains(c),
                            &format!("egress Internet does not exclude cluster range {c}"),
                        )?;
                    }
                }
                for d in &config.egress_deny {
                    if d.is_ipv6() == v6 {
                        ensure(
                            except.contains(&d.to_string()),
                            &format!("egress Internet does not exclude deny-listed {d}"),
                        )?;
                    }
                }
                for e in except {
                    let (addr, _) = parse_cidr(e).map_err(|err| format!("except {e}: {err}"))?;
                    ensure(
                        addr.is_ipv6() == v6,
                        &format!("except {e} in the wrong address family"),
                    )?;
                }
            }
        }
        EgressMode::AllowList => {
            *stats.egress.entry("AllowList").or_default() += 1;
            ensure(
                other.len() == net.allow.len(),
                "egress AllowList: one rule per destination",
            )?;
            for (r, a) in other.iter().zip(&net.allow) {
                let to = r.to.as_deref().unwrap_or_default();
                ensure(to.len() == 1, "AllowList rule: one peer")?;
                let b = to[0]
                    .ip_block
                    .as_ref()
                    .ok_or("AllowList rule: no ipBlock")?;
                ensure(
                    to[0].namespace_selector.is_none() && to[0].pod_selector.is_none(),
                    "AllowList selector",
                )?;
                ensure(b.cidr == a.cidr, "AllowList cidr")?;
                // Never inside a deny-listed range (validation refuses those); every deny-listed
                // range inside it is excepted, directly or through a larger excepted one.
                let entry = Cidr::parse(&a.cidr).map_err(|e| format!("allow {}: {e}", a.cidr))?;
                ensure(
                    !config.egress_deny.iter().any(|d| d.contains(&entry)),
                    "AllowList entry inside the deny-list was planned",
                )?;
                let except: Vec<Cidr> = b
                    .except
                    .iter()
                    .flatten()
                    .map(|e| Cidr::parse(e).map_err(|err| format!("except {e}: {err}")))
                    .collect::<Result<_, _>>()?;
                ensure(
                    except.iter().all(|e| entry.contains(e) && *e != entry),
                    "AllowList except outside its cidr",
                )?;
                for d in config.egress_deny.iter().filter(|d| entry.contains(d)) {
                    ensure(
                        except.iter().any(|e| e.contains(d)),
                        &format!("AllowList {} does not except deny-listed {d}", a.cidr),
                    )?;
                }
                let ports: Vec<(i32, &str)> = r
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| match (&p.port, p.protocol.as_deref()) {
                        (Some(IntOrString::Int(n)), Some(proto)) => (*n, proto),
                        _ => (-1, "?"),
                    })
                    .collect();
                let want: Vec<(i32, &str)> = a
                    .ports
                    .iter()
                    .map(|p| (p.port, p.protocol.as_str()))
                    .collect();
                ensure(ports == want, "AllowList ports")?;
                ensure(
                    r.ports.is_none() == a.ports.is_empty(),
                    "AllowList: no ports means every port",
                )?;
            }
        }
    }
    Ok(())
}
