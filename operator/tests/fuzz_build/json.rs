//! JSON generators: a valid Sandbox mutated, free-form values with its key names, raw bytes.

use super::*;

pub(crate) const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "uid",
    "generation",
    "creationTimestamp",
    "labels",
    "annotations",
    "spec",
    "status",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "value",
    "valueFrom",
    "workingDir",
    "runtimeClassName",
    "resources",
    "cpu",
    "memory",
    "ephemeralStorage",
    "lifetime",
    "ttlSeconds",
    "idleTimeoutSeconds",
    "onExpiry",
    "network",
    "egress",
    "allow",
    "cidr",
    "ports",
    "port",
    "protocol",
    "dns",
    "readOnlyRootFilesystem",
    "hostNetwork",
    "privileged",
    "phase",
    "",
];

pub(crate) const ENUM_WORDS: &[&str] = &[
    "None",
    "Internet",
    "AllowList",
    "none",
    "TCP",
    "UDP",
    "SCTP",
    "ICMP",
    "Delete",
    "Retain",
    "Always",
    "IfNotPresent",
    "Never",
    "airlock.dev/v1alpha1",
    "Sandbox",
    "2024-01-01T00:00:00Z",
    "not a time",
];

pub(crate) fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.next() as i64),
        3 => json!(*rng.pick(&[
            0i64,
            -1,
            1,
            53,
            65535,
            65536,
            604800,
            604801,
            i64::MAX,
            i64::MIN
        ])),
        4 => json!(*rng.pick(&[
            0.5f64,
            -0.0,
            1e300,
            -1e300,
            1e-300,
            2.5e10,
            f64::MAX,
            f64::MIN_POSITIVE
        ])),
        5 => json!(u64::MAX),
        6 => json!(rng.pick(ENUM_WORDS)),
        7 => json!(quantity_string(rng)),
        _ => json!(string(rng)),
    }
}

pub(crate) fn random_value(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.below(3) != 0 {
        return random_scalar(rng);
    }
    if rng.bool() {
        let n = rng.len(20);
        Value::Array((0..n).map(|_| random_value(rng, depth - 1)).collect())
    } else {
        let n = rng.len(12);
        let mut m = serde_json::Map::new();
        for _ in 0..n {
            let k = if rng.one_in(6) {
                string(rng)
            } else {
                rng.pick(KEYS).to_string()
            };
            m.insert(k, random_value(rng, depth - 1));
        }
        Value::Object(m)
    }
}

/// Mutates one random node of `v` (in place).
pub(crate) fn mutate_json(rng: &mut Rng, v: &mut Value) {
    // Walk down a random path.
    if rng.below(4) != 0 {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let i = rng.below(m.len() as u64) as usize;
                let child = m.values_mut().nth(i).unwrap();
                return mutate_json(rng, child);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len() as u64) as usize;
                return mutate_json(rng, &mut a[i]);
            }
            _ => {}
        }
    }
    let cur = v;
    match rng.below(6) {
        0 => *cur = random_scalar(rng),
        1 => *cur = random_value(rng, 3),
        2 => {
            if let Value::Object(m) = cur {
                if !m.is_empty() {
                    let k = m
                        .keys()
                        .nth(rng.below(m.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    m.remove(&k);
                }
            } else {
                *cur = Value::Null;
            }
        }
        3 => {
            if let Value::Object(m) = cur {
                m.insert(rng.pick(KEYS).to_string(), random_value(rng, 2));
            } else if let Value::Array(a) = cur {
                let n = rng.len(500);
                let item = a.first().cloned().unwrap_or_else(|| random_scalar(rng));
                a.extend(std::iter::repeat_n(item, n));
            } else {
                *cur = Value::Array(vec![cur.clone()]);
            }
        }
        4 => {
            // Retype: number <-> string.
            *cur = match cur.take() {
                Value::String(s) => s
                    .parse::<f64>()
                    .map(|f| json!(f))
                    .unwrap_or(Value::String(s)),
                Value::Number(n) => Value::String(n.to_string()),
                other => json!([other]),
            };
        }
        _ => *cur = json!({}),
    }
}

pub(crate) fn mutated_json_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let base = structured_sandbox(rng);
    let mut v = serde_json::to_value(&base).map_err(|e| format!("serialize base: {e}"))?;
    for _ in 0..rng.range(1, 4) {
        mutate_json(rng, &mut v);
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

pub(crate) fn random_json_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let mut v = random_value(rng, 5);
    if rng.bool() {
        // Give it a chance to get past the required fields.
        v = json!({
            "apiVersion": "airlock.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": random_value(rng, 3),
            "spec": {"image": random_scalar(rng), "resources": random_value(rng, 2),
                     "network": random_value(rng, 3), "lifetime": random_value(rng, 2)},
        });
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

pub(crate) fn bytes_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let mut text = if rng.one_in(4) {
        let n = rng.len(4096);
        (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>()
    } else {
        serde_json::to_vec(&structured_sandbox(rng)).unwrap()
    };
    for _ in 0..rng.range(1, 8) {
        if text.is_empty() {
            break;
        }
        let i = rng.below(text.len() as u64) as usize;
        match rng.below(4) {
            0 => text[i] = rng.next() as u8,
            1 => text[i] ^= 1 << rng.below(8),
            2 => {
                text.remove(i);
            }
            _ => {
                let b = *rng.pick(b"{}[]\":,0123456789-.eE\\ntfu");
                text.insert(i, b);
            }
        }
    }
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}
