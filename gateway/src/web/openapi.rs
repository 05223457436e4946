//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`. Built from one
//! table of the endpoints; the API tests check that every route in [`super::api::routes`]
//! is described here and the other way round.

use serde_json::{Map, Value, json};

/// How a request carries its input.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    /// JSON with these string fields, all required.
    Json(&'static [&'static str]),
    /// multipart/form-data: `file`, and these other fields.
    Upload(&'static [&'static str]),
}

/// (method, path, summary, changes anything, body, success status)
type Endpoint = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Body,
    &'static str,
);

pub const ENDPOINTS_LEN: usize = ENDPOINTS.len();

const ENDPOINTS: &[Endpoint] = &[
    (
        "get",
        "/api/v1/openapi.json",
        "This document (no session needed)",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/session",
        "Sign in: sets the session cookie; returns the user, role, CSRF token and must_change_password (signed in with a one-time password: only POST /api/v1/password is allowed until it is changed). Throttled per address and account: 429 after repeated failures; 503 while too many password checks run",
        false,
        Body::Json(&["user", "password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/session",
        "The signed-in user, role, CSRF token and must_change_password",
        false,
        Body::None,
        "200",
    ),
    (
        "delete",
        "/api/v1/session",
        "Sign out (CSRF token required)",
        false,
        Body::None,
        "204",
    ),
    (
        "post",
        "/api/v1/password",
        "Change your password (CSRF token required): your other sessions end, this one is kept",
        false,
        Body::Json(&["old", "new"]),
        "200",
    ),
    (
        "post",
        "/api/v1/users",
        "Add an account or reset its password (its sessions end); role admin or auditor",
        true,
        Body::Json(&["name", "role", "password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/status",
        "Relay, queue, counters, token and certificates expiring within 30 days",
        false,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/certificates",
        "Internal users' certificates (?q= searches address, subject, fingerprint)",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/certificates",
        "Upload a user's PKCS#12 with its password: the key goes into the token",
        true,
        Body::Upload(&["password"]),
        "201",
    ),
    (
        "get",
        "/api/v1/certificates/{fp}",
        "One internal certificate (fingerprint or its first 8+ hex digits), with PEM",
        false,
        Body::None,
        "200",
    ),
    (
        "delete",
        "/api/v1/certificates/{fp}",
        "Delete a user's key from the token and its certificate (your password again)",
        true,
        Body::Json(&["password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/trust",
        "Trusted root and intermediate CA certificates",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/trust",
        "Upload root or intermediate CA certificates (PEM or DER)",
        true,
        Body::Upload(&[]),
        "201",
    ),
    (
        "get",
        "/api/v1/trust/{fp}",
        "One trusted certificate, with PEM",
        false,
        Body::None,
        "200",
    ),
    (
        "delete",
        "/api/v1/trust/{fp}",
        "Stop trusting a certificate (your password again)",
        true,
        Body::Json(&["password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/correspondents",
        "External correspondents' certificates (harvested, imported)",
        false,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/correspondents/{fp}",
        "One correspondent's certificate, with PEM",
        false,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/candidates",
        "Certificates from signed mail whose signer is not trusted: never encrypted to until approved",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/candidates/{fp}/approve",
        "Vouch for a candidate: it becomes a correspondent's certificate (your password again)",
        true,
        Body::Json(&["password"]),
        "200",
    ),
    (
        "delete",
        "/api/v1/candidates/{fp}",
        "Remove a candidate (your password again)",
        true,
        Body::Json(&["password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/policy",
        "The policy in force and the staged one ([policy] tables as TOML)",
        false,
        Body::None,
        "200",
    ),
    (
        "put",
        "/api/v1/policy/staged",
        "Stage a policy: checked now, refused with the reason when invalid",
        true,
        Body::Json(&["text"]),
        "200",
    ),
    (
        "delete",
        "/api/v1/policy/staged",
        "Discard the staged policy",
        true,
        Body::None,
        "204",
    ),
    (
        "post",
        "/api/v1/policy/apply",
        "Put the staged policy in force, at once and whole",
        true,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/queue",
        "Queued messages (envelopes)",
        false,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/queue/{id}",
        "One queued message's envelope",
        false,
        Body::None,
        "200",
    ),
    (
        "delete",
        "/api/v1/queue/{id}",
        "Delete a queued message",
        true,
        Body::None,
        "204",
    ),
    (
        "post",
        "/api/v1/queue/{id}/retry",
        "Try a queued message now",
        true,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/audit",
        "The audit log, newest first (?limit=, default 100)",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/correspondents/upload",
        "Import correspondents' certificates (PEM or DER; end-entity, naming an address, valid now)",
        true,
        Body::Upload(&[]),
        "201",
    ),
    (
        "get",
        "/api/v1/crls",
        "The CRLs held (one per issuer) and the distribution points the held certificates name, with the last download from each",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/crls",
        "Upload a CRL (DER or PEM); its issuer must be a trusted CA here and its signature verify",
        true,
        Body::Upload(&[]),
        "201",
    ),
    (
        "post",
        "/api/v1/crls/refresh",
        "Fetch every CRL from its distribution point now",
        true,
        Body::None,
        "200",
    ),
    (
        "delete",
        "/api/v1/crls/{fp}",
        "Remove a CRL (your password again)",
        true,
        Body::Json(&["password"]),
        "200",
    ),
    (
        "get",
        "/api/v1/ca",
        "The built-in CA's certificate (details and PEM)",
        false,
        Body::None,
        "200",
    ),
    (
        "get",
        "/api/v1/ca/certificate",
        "The built-in CA's certificate as a PEM file, for mail clients to trust",
        false,
        Body::None,
        "200",
    ),
    (
        "post",
        "/api/v1/ca/issue",
        "Issue an internal user a certificate from the built-in CA (a new key in the token)",
        true,
        Body::Json(&["address"]),
        "201",
    ),
    (
        "post",
        "/api/v1/ca/renew",
        "Renew an internal user's certificate from the built-in CA (same key)",
        true,
        Body::Json(&["address"]),
        "201",
    ),
    (
        "get",
        "/api/v1/metrics",
        "Counters, queue, certificate expiry and CRL freshness in Prometheus' text format; a session or HTTP Basic credentials",
        false,
        Body::None,
        "200",
    ),
];

/// (method, path) of every endpoint.
pub fn endpoints() -> Vec<(&'static str, &'static str)> {
    ENDPOINTS.iter().map(|e| (e.0, e.1)).collect()
}

fn error_response(text: &str) -> Value {
    json!({ "description": text, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for &(method, path, summary, changes, body, ok) in ENDPOINTS {
        let mut op = Map::new();
        op.insert("summary".into(), json!(summary));
        let public =
            path == "/api/v1/openapi.json" || (path == "/api/v1/session" && method == "post");
        if public {
            op.insert("security".into(), json!([]));
        }
        let mut params = Vec::new();
        for name in ["fp", "id"] {
            if path.contains(&format!("{{{name}}}")) {
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
            }
        }
        if changes || method == "delete" || path == "/api/v1/password" {
            params.push(
                json!({ "name": "X-CSRF-Token", "in": "header", "required": true,
                "description": "the session's CSRF token (from POST or GET /api/v1/session)",
                "schema": { "type": "string" } }),
            );
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        match body {
            Body::None => {}
            Body::Json(fields) => {
                let props: Map<String, Value> = fields
                    .iter()
                    .map(|f| (f.to_string(), json!({ "type": "string" })))
                    .collect();
                op.insert(
                    "requestBody".into(),
                    json!({ "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": fields, "properties": props } } } }),
                );
            }
            Body::Upload(fields) => {
                let mut props: Map<String, Value> = fields
                    .iter()
                    .map(|f| (f.to_string(), json!({ "type": "string" })))
                    .collect();
                props.insert(
                    "file".into(),
                    json!({ "type": "string", "format": "binary" }),
                );
                op.insert(
                    "requestBody".into(),
                    json!({ "required": true, "content": { "multipart/form-data": { "schema": {
                    "type": "object", "required": ["file"], "properties": props } } } }),
                );
            }
        }
        let mut responses = Map::new();
        responses.insert(
            ok.into(),
            json!({ "description": "done", "content": { "application/json": {} } }),
        );
        if !public {
            responses.insert("401".into(), error_response("not signed in"));
            responses.insert(
                "403".into(),
                error_response("the session signed in with a one-time password: change it first"),
            );
        }
        if changes {
            responses.insert(
                "403".into(),
                error_response(
                    "an auditor, a wrong CSRF token, a wrong password confirmation, or a \
                     one-time password not yet changed",
                ),
            );
            responses.insert(
                "400".into(),
                error_response("refused: the reason names what was wrong; nothing changed"),
            );
        }
        if path == "/api/v1/session" && method == "post" {
            responses.insert("401".into(), error_response("wrong user name or password"));
            responses.insert(
                "429".into(),
                error_response("too many failed sign-ins (Retry-After)"),
            );
            responses.insert(
                "503".into(),
                error_response("too many password checks at once; try again"),
            );
        }
        if path.contains("{id}") {
            responses.insert(
                "400".into(),
                error_response("not a queue id (14 to 16 of 0-9 and A-F)"),
            );
        }
        if path.contains('{') {
            responses.insert("404".into(), error_response("no such object"));
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(method.into(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "smimegw administration API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The S/MIME gateway's administration: the same actions as the web \
                and serial consoles. Sign in with POST /api/v1/session; send the session \
                cookie, and on changing calls the CSRF token in X-CSRF-Token. Auditors read only."
        },
        "servers": [{ "url": "/" }],
        "components": {
            "securitySchemes": { "session": { "type": "apiKey", "in": "cookie", "name": super::auth::COOKIE } },
            "schemas": { "Error": { "type": "object", "required": ["error"],
                "properties": { "error": { "type": "string" } } } }
        },
        "security": [{ "session": [] }],
        "paths": paths,
    })
}
