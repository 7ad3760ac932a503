//! A scripted Kubernetes API server on a `tower-test` mock service, handed to
//! `kube::Client::new`. It keeps objects by path, answers GET/LIST/PATCH (server-side apply,
//! merge patch, status)/POST/DELETE like the real one in the ways the reconcilers rely on, and
//! records every request so scenarios can assert what was (and was not) written. Tests change
//! the world between reconciles (a Job succeeds, an annotation appears) with `update`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use kube::client::Body;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

/// An open watch: its collection path, label selector and the line sink of its body.
struct Watch {
    collection: String,
    selector: String,
    lines: UnboundedSender<Bytes>,
}

#[derive(Clone, Default)]
pub struct ApiServer {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    next_rv: Arc<Mutex<u64>>,
    watches: Arc<Mutex<Vec<Watch>>>,
}

/// Path of a namespaced object: `group_version` is `v1` (core) or `apps/v1`, `artstore.io/v1alpha1`.
pub fn path(group_version: &str, plural: &str, ns: &str, name: &str) -> String {
    let root = if group_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group_version}")
    };
    format!("{root}/namespaces/{ns}/{plural}/{name}")
}

fn full(bytes: Vec<u8>) -> BoxBody<Bytes, Infallible> {
    Full::new(Bytes::from(bytes)).boxed()
}

fn status_body(code: StatusCode, reason: &str, message: String) -> Resp {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": message,
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    if let (Some(t), Some(p)) = (target.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                merge(t.get_mut(k).unwrap(), v);
            } else {
                t.insert(k.clone(), v.clone());
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok())
            .flatten();
        if let Some(b) = hex {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ApiServer {
    /// A client whose every request this server answers.
    pub fn start() -> (kube::Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Resp>();
        let server = ApiServer::default();
        let s = server.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let resp = s.handle(req).await;
                send.send_response(resp);
            }
        });
        (kube::Client::new(service, "archive"), server)
    }

    fn bump(&self) -> String {
        let mut rv = self.next_rv.lock().unwrap();
        *rv += 1;
        rv.to_string()
    }

    /// Puts an object (any `kind` with metadata.namespace/name) at its path.
    pub fn insert(&self, group_version: &str, plural: &str, mut obj: Value) {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("archive")
            .to_string();
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        obj["metadata"]["resourceVersion"] = json!(self.bump());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{plural}-{name}"));
        }
        let p = path(group_version, plural, &ns, &name);
        self.objects.lock().unwrap().insert(p.clone(), obj.clone());
        self.notify("ADDED", &p, &obj);
    }

    /// Sends a watch event for the object at `path` to every open watch on its collection.
    fn notify(&self, kind: &str, path: &str, obj: &Value) {
        let Some((collection, _)) = path.rsplit_once('/') else {
            return;
        };
        let line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
        let mut watches = self.watches.lock().unwrap();
        watches.retain(|w| {
            if w.collection != collection || !labels_match(obj, &w.selector) {
                return true;
            }
            let mut l = line.clone();
            l.push(b'\n');
            w.lines.send(Bytes::from(l)).is_ok()
        });
    }

    fn open_watch(&self, collection: String, selector: String) -> Resp {
        let (mut sender, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(16);
        let (lines, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if sender.send_data(line).await.is_err() {
                    break;
                }
            }
        });
        self.watches.lock().unwrap().push(Watch {
            collection,
            selector,
            lines,
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(body.boxed())
            .unwrap()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn typed<T: DeserializeOwned>(&self, path: &str) -> T {
        serde_json::from_value(
            self.get(path)
                .unwrap_or_else(|| panic!("{path} not stored")),
        )
        .expect("typed object")
    }

    /// Changes a stored object, as another actor in the cluster would.
    pub fn update(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let obj = {
            let mut objects = self.objects.lock().unwrap();
            let obj = objects
                .get_mut(path)
                .unwrap_or_else(|| panic!("{path} not stored"));
            f(obj);
            obj["metadata"]["resourceVersion"] = json!(self.bump());
            obj.clone()
        };
        self.notify("MODIFIED", path, &obj);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// Writes (PATCH/POST/DELETE) whose path contains `fragment`.
    pub fn writes_to(&self, fragment: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET" && r.path.contains(fragment))
            .collect()
    }

    /// Reasons of the Events published so far.
    pub fn event_reasons(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/events") && r.method != "GET")
            .filter_map(|r| r.body["reason"].as_str().map(str::to_string))
            .collect()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    async fn handle(&self, req: Request<Body>) -> Resp {
        let method = req.method().to_string();
        let uri_path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.log.lock().unwrap().push(Recorded {
            method: method.clone(),
            path: uri_path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        let segments: Vec<&str> = uri_path.split('/').filter(|s| !s.is_empty()).collect();
        let ns_pos = segments.iter().position(|s| *s == "namespaces");
        let after_ns = ns_pos.map_or(0, |p| segments.len() - p - 2);
        let (object_path, subresource) = if after_ns == 3 {
            (
                segments[..segments.len() - 1].join("/"),
                segments.last().copied(),
            )
        } else {
            (segments.join("/"), None)
        };
        let object_path = format!("/{object_path}");
        match (method.as_str(), after_ns) {
            ("GET", 1) if matches!(query_param(&query, "watch").as_deref(), Some("true" | "1")) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                self.open_watch(object_path, selector)
            }
            ("GET", 1) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let prefix = format!("{object_path}/");
                let items: Vec<Value> = self
                    .objects
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .filter(|v| labels_match(v, &selector))
                    .collect();
                ok(
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            ("GET", _) => match self.get(&object_path) {
                Some(v) => ok(&v),
                None => status_body(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{object_path} not found"),
                ),
            },
            ("POST", 1) => {
                let mut obj = body.clone();
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        format!(
                            "{}{}",
                            obj["metadata"]["generateName"].as_str().unwrap_or("obj-"),
                            self.bump()
                        )
                    });
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["resourceVersion"] = json!(self.bump());
                self.objects
                    .lock()
                    .unwrap()
                    .insert(format!("{object_path}/{name}"), obj.clone());
                let mut r = ok(&obj);
                *r.status_mut() = StatusCode::CREATED;
                r
            }
            ("PATCH", _) => {
                let mut objects = self.objects.lock().unwrap();
                let existing = objects.get(&object_path).cloned();
                let updated = if content_type.contains("apply-patch") {
                    match (existing, subresource) {
                        (Some(mut obj), Some("status")) => {
                            obj["status"] = body["status"].clone();
                            obj
                        }
                        (None, Some(_)) => {
                            return status_body(
                                StatusCode::NOT_FOUND,
                                "NotFound",
                                format!("{object_path} not found"),
                            );
                        }
                        (Some(mut obj), _) => {
                            let status = obj.get("status").cloned();
                            let mut applied = body.clone();
                            applied.as_object_mut().unwrap().remove("status");
                            merge(&mut obj, &applied);
                            if let Some(s) = status {
                                obj["status"] = s;
                            }
                            obj
                        }
                        (None, None) => {
                            let mut obj = body.clone();
                            obj["metadata"]["uid"] =
                                json!(format!("uid-{}", object_path.replace('/', "-")));
                            obj["metadata"]["creationTimestamp"] = json!("2026-11-23T00:00:00Z");
                            obj
                        }
                    }
                } else {
                    let Some(mut obj) = existing else {
                        return status_body(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("{object_path} not found"),
                        );
                    };
                    let mut patch = body.clone();
                    if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    merge(&mut obj, &patch);
                    obj
                };
                let mut updated = updated;
                // A write that changes nothing is no event, as with the real API server (else
                // every status write would trigger the next reconcile).
                if let Some(before) = objects.get(&object_path) {
                    let mut same = updated.clone();
                    same["metadata"]["resourceVersion"] =
                        before["metadata"]["resourceVersion"].clone();
                    if &same == before {
                        return ok(before);
                    }
                }
                updated["metadata"]["resourceVersion"] = json!(self.bump());
                // A deleted object whose last finalizer goes is gone.
                let gone = !updated["metadata"]["deletionTimestamp"].is_null()
                    && updated["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(|f| f.is_empty());
                if gone {
                    objects.remove(&object_path);
                    self.notify("DELETED", &object_path, &updated);
                } else {
                    objects.insert(object_path.clone(), updated.clone());
                    self.notify("MODIFIED", &object_path, &updated);
                }
                ok(&updated)
            }
            ("PUT", _) => {
                let mut objects = self.objects.lock().unwrap();
                let Some(existing) = objects.get(&object_path) else {
                    return status_body(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{object_path} not found"),
                    );
                };
                // Optimistic concurrency, as the real API server does it.
                if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                    return status_body(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("{object_path} was modified"),
                    );
                }
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!(self.bump());
                objects.insert(object_path.clone(), obj.clone());
                self.notify("MODIFIED", &object_path, &obj);
                ok(&obj)
            }
            ("DELETE", _) => match self.objects.lock().unwrap().remove(&object_path) {
                Some(v) => {
                    self.notify("DELETED", &object_path, &v);
                    ok(&v)
                }
                None => status_body(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{object_path} not found"),
                ),
            },
            _ => status_body(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {uri_path}"),
            ),
        }
    }
}
