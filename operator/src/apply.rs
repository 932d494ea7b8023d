//! Server-side apply of owned objects, skipped when the API server already holds them.
//!
//! An object is written only when it is missing, when what the API server holds lacks a value
//! the desired object sets (a change made by someone else), or when the desired object itself
//! changed since the last apply (its hash, kept in an annotation, differs: this catches fields the
//! operator stopped setting). A reconcile with nothing to do writes nothing.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::cluster::desired::text_hash;
use crate::context::{Context, Result};

/// The one field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "kairos-operator";
/// Hash of the desired object as last applied.
pub const APPLIED_HASH: &str = "kairos.dev/applied-hash";

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Unchanged,
    Created,
    Updated,
}

/// Whether `have` holds every value `want` sets: for objects each key of `want` (recursively),
/// for arrays the same length and each element. Fields the API server adds (defaults, status,
/// managedFields) are ignored.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (_, Value::Null) => true,
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| wv.is_null() || h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (h, w) => h == w,
    }
}

/// Stamps `desired` with [`APPLIED_HASH`] of its own content; returns its JSON.
pub fn stamp<K: Resource + Serialize>(desired: &mut K) -> Result<Value> {
    let hash = text_hash(&serde_json::to_string(&*desired)?);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH.to_string(), hash);
    Ok(serde_json::to_value(&*desired)?)
}

/// Applies `desired` unless `existing` (what the API server holds) already matches it. Returns
/// what it did and the object as the API server now holds it.
pub async fn apply<K>(
    api: &Api<K>,
    mut desired: K,
    existing: Option<K>,
    ctx: &Context,
) -> Result<(Applied, K)>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let want = stamp(&mut desired)?;
    if let Some(have) = existing.as_ref() {
        if contains(&serde_json::to_value(have)?, &want) {
            return Ok((Applied::Unchanged, have.clone()));
        }
    }
    let name = desired.name_any();
    let now = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await?;
    let kind = want
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    ctx.metrics.writes.with_label_values(&[kind]).inc();
    tracing::info!(
        "{} {kind} {name}",
        if existing.is_some() {
            "updated"
        } else {
            "created"
        }
    );
    let applied = if existing.is_some() {
        Applied::Updated
    } else {
        Applied::Created
    };
    Ok((applied, now))
}

/// [`apply`] after reading the current object.
pub async fn get_and_apply<K>(api: &Api<K>, desired: K, ctx: &Context) -> Result<Applied>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let existing = api.get_opt(&desired.name_any()).await?;
    Ok(apply(api, desired, existing, ctx).await?.0)
}

/// Writes `status` through server-side apply on the status subresource, unless it equals
/// `current`. Returns whether it wrote.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    status: &S,
    current: Option<&S>,
    ctx: &Context,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics
        .writes
        .with_label_values(&[&format!("{}/status", K::kind(&()))])
        .inc();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_with_server_defaults_still_contains_what_was_applied() {
        // Proves added defaults do not trigger a write, while a changed or missing value does.
        let want = json!({"spec": {"replicas": 3, "ports": [{"port": 9092}]}, "x": null});
        let have = json!({"spec": {"replicas": 3, "ports": [{"port": 9092, "protocol": "TCP"}],
                          "revisionHistoryLimit": 10}, "status": {}});
        assert!(contains(&have, &want));
        let scaled = json!({"spec": {"replicas": 1, "ports": [{"port": 9092}]}});
        assert!(!contains(&scaled, &want));
        let fewer_ports = json!({"spec": {"replicas": 3, "ports": []}});
        assert!(!contains(&fewer_ports, &want));
        assert!(!contains(&json!({}), &want));
    }
}
