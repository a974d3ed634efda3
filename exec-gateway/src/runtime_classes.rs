//! Which RuntimeClasses a CreateSandbox may name (`--allowed-runtime-classes`).
//!
//! The RuntimeClass is the sandbox's isolation boundary (Kata, gVisor...): letting any caller
//! pick one would let them pick `runc` (or any class a node happens to have) and escape the
//! platform team's choice. A request that leaves `runtime_class_name` empty gets the operator's
//! default and is always accepted; one that names a class must name one of the allowed ones.
//!
//! A refused class is INVALID_ARGUMENT, not PERMISSION_DENIED: the refusal is the same for every
//! caller (it is the gateway's configuration, not the caller's RBAC), and the fix is to change
//! the request (leave the field empty or name an allowed class), which is what INVALID_ARGUMENT
//! tells a client.

use std::collections::BTreeSet;

use airlock_crds::validation::names::is_dns_subdomain;
use tonic::Status;

/// Errors of parsing `--allowed-runtime-classes`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeClassesError {
    #[error("--allowed-runtime-classes: {0:?} is not a valid RuntimeClass name (a DNS subdomain)")]
    InvalidName(String),
}

/// The RuntimeClasses requests may name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedRuntimeClasses {
    /// Only the operator's default: requests must leave `runtime_class_name` empty (the
    /// default when the flag is not given).
    #[default]
    DefaultOnly,
    /// These classes (and the default).
    Only(BTreeSet<String>),
    /// Any class (`*`): the caller chooses. For clusters where every class is acceptable.
    Any,
}

impl AllowedRuntimeClasses {
    /// Parses a comma-separated list; `*` allows any class; empty entries are ignored (the chart
    /// may render a trailing comma), so "" is [`AllowedRuntimeClasses::DefaultOnly`].
    pub fn parse(list: &str) -> Result<Self, RuntimeClassesError> {
        let mut set = BTreeSet::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "*" {
                return Ok(AllowedRuntimeClasses::Any);
            }
            if !is_dns_subdomain(name) {
                return Err(RuntimeClassesError::InvalidName(name.to_string()));
            }
            set.insert(name.to_string());
        }
        Ok(if set.is_empty() {
            AllowedRuntimeClasses::DefaultOnly
        } else {
            AllowedRuntimeClasses::Only(set)
        })
    }

    /// These classes only (tests and embedders).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        AllowedRuntimeClasses::Only(names.into_iter().map(Into::into).collect())
    }

    /// INVALID_ARGUMENT naming `runtime_class_name` and the allowed classes unless `requested`
    /// ("" = the operator's default) is allowed.
    pub fn check(&self, requested: &str) -> Result<(), Status> {
        if requested.is_empty() {
            return Ok(());
        }
        let allowed = match self {
            AllowedRuntimeClasses::Any => return Ok(()),
            AllowedRuntimeClasses::Only(set) if set.contains(requested) => return Ok(()),
            AllowedRuntimeClasses::Only(set) => format!(
                "allowed: {}, or leave it empty for the default",
                set.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            AllowedRuntimeClasses::DefaultOnly => {
                "this gateway allows only the default: leave it empty".to_string()
            }
        };
        Err(crate::validate::invalid(
            "runtime_class_name",
            format!("RuntimeClass {requested:?} is not allowed ({allowed})"),
        ))
    }

    /// For the startup log.
    pub fn describe(&self) -> String {
        match self {
            AllowedRuntimeClasses::DefaultOnly => "(the operator's default only)".into(),
            AllowedRuntimeClasses::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(","),
            AllowedRuntimeClasses::Any => "*".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn parse_lists() {
        let p = AllowedRuntimeClasses::parse;
        assert_eq!(p("").unwrap(), AllowedRuntimeClasses::DefaultOnly);
        assert_eq!(p(" , ").unwrap(), AllowedRuntimeClasses::DefaultOnly);
        assert_eq!(
            p("kata, gvisor,kata,").unwrap(),
            AllowedRuntimeClasses::only(["gvisor", "kata"])
        );
        assert_eq!(p("kata,*").unwrap(), AllowedRuntimeClasses::Any);
        assert_eq!(
            p("kata,Bad_Name").unwrap_err(),
            RuntimeClassesError::InvalidName("Bad_Name".into())
        );
        assert!(
            p("x;rm")
                .unwrap_err()
                .to_string()
                .starts_with("--allowed-runtime-classes: \"x;rm\"")
        );
    }

    #[test]
    fn checks_name_the_field_and_the_allowed_classes() {
        let only = AllowedRuntimeClasses::only(["gvisor", "kata"]);
        only.check("").unwrap();
        only.check("kata").unwrap();
        only.check("gvisor").unwrap();
        let e = only.check("runc").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "runtime_class_name: RuntimeClass \"runc\" is not allowed (allowed: gvisor, kata, or leave it empty for the default)"
        );
        let d = AllowedRuntimeClasses::DefaultOnly;
        d.check("").unwrap();
        let e = d.check("kata").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("runtime_class_name: RuntimeClass \"kata\" is not allowed (this gateway allows only the default"),
            "{}",
            e.message()
        );
        AllowedRuntimeClasses::Any.check("anything").unwrap();
    }
}
