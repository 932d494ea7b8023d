//! Security settings Kairos cannot honour yet are refused at start-up (fail closed).
//!
//! A Kafka user who writes `listeners=SASL_SSL://…` with `ssl.*`, `sasl.*` and an authorizer
//! expects TLS, authentication and ACLs on that port. Serving plaintext without them there
//! would be a silent downgrade, so until Kairos implements them the broker does not start and
//! says which setting it cannot honour, in one line.

use std::collections::BTreeMap;

use super::ConfigError;

/// Kafka's default `listener.security.protocol.map`: each protocol name maps to itself.
const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];

/// Keys (exact) that configure authentication or authorization.
const SECURITY_KEYS: &[&str] = &[
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "principal.builder.class",
    "connections.max.reauth.ms",
    "security.inter.broker.protocol",
];

/// Key prefixes that configure TLS, SASL or delegation tokens (also per listener, as
/// `listener.name.<listener>.ssl.*` / `.sasl.*` / `.<mechanism>.sasl.jaas.config`).
const SECURITY_PREFIXES: &[&str] = &["ssl.", "sasl.", "delegation.token."];

/// Refuses a configuration that asks for a security feature Kairos does not have yet.
pub fn refuse_unsupported(
    props: &BTreeMap<String, String>,
    controller_name: &str,
) -> Result<(), ConfigError> {
    let map = protocol_map(props)?;
    for key in ["listeners", "advertised.listeners"] {
        let Some(value) = props.get(key) else {
            continue;
        };
        for listener in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            let name = listener.split_once("://").map_or(listener, |(n, _)| n);
            let protocol = match map.get(name.to_ascii_uppercase().as_str()) {
                Some(p) => p.clone(),
                // Kafka: a controller listener missing from the map is PLAINTEXT.
                None if name.eq_ignore_ascii_case(controller_name) => "PLAINTEXT".to_string(),
                None => {
                    return Err(invalid(
                        props,
                        key,
                        &format!("listener {name} has no security protocol in listener.security.protocol.map"),
                    ))
                }
            };
            if protocol != "PLAINTEXT" {
                return Err(invalid(
                    props,
                    key,
                    &format!("listener {name} uses security protocol {protocol}, which Kairos does not support yet (only PLAINTEXT); refusing to start rather than serve it without TLS or authentication"),
                ));
            }
        }
    }
    if let Some(key) = props.keys().find(|k| is_security_key(k)) {
        return Err(invalid(
            props,
            key,
            "security settings (TLS, SASL, ACLs) are not supported yet; refusing to start rather than run without them",
        ));
    }
    Ok(())
}

fn is_security_key(key: &str) -> bool {
    let per_listener = key
        .strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
        .map(|(_, setting)| setting);
    let setting = per_listener.unwrap_or(key);
    SECURITY_KEYS.contains(&key)
        || SECURITY_PREFIXES.iter().any(|p| setting.starts_with(p))
        || (per_listener.is_some() && setting.contains(".sasl."))
}

/// `listener.security.protocol.map` (`NAME:PROTOCOL,…`), upper-cased names, Kafka's default
/// when unset.
fn protocol_map(props: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "listener.security.protocol.map";
    let Some(value) = props.get(key) else {
        return Ok(PROTOCOLS
            .iter()
            .map(|p| (p.to_string(), p.to_string()))
            .collect());
    };
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, protocol)) = entry.split_once(':') else {
            return Err(invalid(
                props,
                key,
                &format!("{entry:?} is not NAME:PROTOCOL"),
            ));
        };
        let protocol = protocol.trim().to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(invalid(
                props,
                key,
                &format!(
                    "unknown security protocol {protocol} (expected one of {})",
                    PROTOCOLS.join(", ")
                ),
            ));
        }
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

fn invalid(props: &BTreeMap<String, String>, key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: props.get(key).cloned().unwrap_or_default(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)]) -> Result<(), String> {
        let props = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        refuse_unsupported(&props, "CONTROLLER").map_err(|e| e.to_string())
    }

    #[test]
    fn plaintext_listeners_and_a_mapped_controller_pass() {
        // Proves the settings Kairos serves today start: PLAINTEXT, an unmapped CONTROLLER
        // listener, and custom names mapped to PLAINTEXT.
        check(&[("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093")]).unwrap();
        check(&[
            ("listeners", "INTERNAL://:9092"),
            (
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
        ])
        .unwrap();
    }

    #[test]
    fn any_other_protocol_or_security_setting_stops_start_up() {
        // Proves each way of asking for TLS, SASL or ACLs is refused with the setting named.
        let e = check(&[("listeners", "SASL_SSL://:9093")]).unwrap_err();
        assert!(e.contains("listeners") && e.contains("SASL_SSL"), "{e}");
        let e = check(&[
            ("listeners", "EXTERNAL://:9093"),
            ("listener.security.protocol.map", "EXTERNAL:SSL"),
        ])
        .unwrap_err();
        assert!(e.contains("EXTERNAL") && e.contains("SSL"), "{e}");
        let e = check(&[("listeners", "OTHER://:9093")]).unwrap_err();
        assert!(e.contains("listener.security.protocol.map"), "{e}");
        for key in [
            "ssl.keystore.location",
            "sasl.enabled.mechanisms",
            "authorizer.class.name",
            "super.users",
            "listener.name.external.ssl.keystore.location",
            "listener.name.external.scram-sha-256.sasl.jaas.config",
            "delegation.token.secret.key",
        ] {
            let e = check(&[("listeners", "PLAINTEXT://:9092"), (key, "x")]).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = check(&[("listener.security.protocol.map", "A:KERBEROS")]).unwrap_err();
        assert!(e.contains("KERBEROS"), "{e}");
    }
}
