//! Quantities are int-or-string in Kubernetes (`cpu: 2` and `cpu: "2"` mean the same); the
//! API server stores what the user wrote, so accept both when reading.
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Float(f64),
    Str(String),
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Quantity>, D::Error> {
    Ok(Option::<IntOrString>::deserialize(d)?.map(|v| match v {
        IntOrString::Int(i) => Quantity(i.to_string()),
        IntOrString::Float(f) => Quantity(f.to_string()),
        IntOrString::Str(s) => Quantity(s),
    }))
}

#[cfg(test)]
mod tests {
    use crate::SandboxResources;

    #[test]
    fn accepts_int_and_string_quantities() {
        let r: SandboxResources = serde_json::from_str(r#"{"cpu": 2, "memory": "512Mi"}"#).unwrap();
        assert_eq!(r.cpu.unwrap().0, "2");
        assert_eq!(r.memory.unwrap().0, "512Mi");
        assert!(r.ephemeral_storage.is_none());
    }
}
