//! The MCP tools' results: the JSON Schemas they declare as `outputSchema` and the
//! `structuredContent` they return beside the text (MCP revision 2025-06-18 on).
//!
//! The schemas are written out rather than derived, since the results are the engine's own
//! serialised types: each names the fields an agent relies on (required) and their types,
//! and leaves other properties open, so that a field the engine adds later still validates.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

/// A successful result: `value` as structured content and, for clients that read only
/// text, as one JSON text item after the `summary` items.
pub fn structured(
    summary: Vec<ContentBlock>,
    value: &impl serde::Serialize,
) -> Result<CallToolResult, String> {
    let value = serde_json::to_value(value).map_err(|e| format!("serialising the result: {e}"))?;
    let mut result = CallToolResult::structured(value);
    result.content.splice(0..0, summary);
    Ok(result)
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        // Every schema below is an object literal.
        _ => Arc::default(),
    }
}

/// An object with these `required` keys among its `properties`; other keys are allowed.
fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// `inner` or null.
fn nullable(inner: Value) -> Value {
    json!({ "anyOf": [inner, { "type": "null" }] })
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

/// Where in its document a chunk lies (pages, heading path, character span).
fn locator() -> Value {
    nullable(json!({
        "type": "object",
        "description": "Where in its document the chunk lies (pages, heading path, character span)."
    }))
}

/// A knowledge-base hit (a chunk with its provenance and scores).
fn hit() -> Value {
    object(
        &[
            "chunk_id",
            "doc_id",
            "title",
            "text",
            "score",
            "contributor",
            "datanet",
            "content_hash",
        ],
        json!({
            "chunk_id": string("The chunk id (doc_id#n)."),
            "doc_id": string("The document id."),
            "title": string("The document's title."),
            "text": string("The chunk's text."),
            "score": { "type": "number", "description": "The fused relevance score." },
            "contributor": string("The contributor's EVM address."),
            "datanet": string("The datanet (document collection)."),
            "content_hash": string("keccak-256 of the chunk text (0x-hex)."),
            "start": { "type": "integer", "minimum": 0 },
            "end": { "type": "integer", "minimum": 0 },
            "locator": locator(),
        }),
    )
}

/// A source cited by an answer or a retrieval, with its share of the credit.
fn citation() -> Value {
    object(
        &[
            "marker",
            "weight_bps",
            "chunk_id",
            "doc_id",
            "title",
            "contributor",
            "datanet",
            "content_hash",
            "score",
            "snippet",
        ],
        json!({
            "marker": { "type": "integer", "minimum": 1, "description": "The [n] marker." },
            "weight_bps": {
                "type": "integer", "minimum": 0, "maximum": 10000,
                "description": "The source's share of the credit in basis points (all sum to 10000)."
            },
            "chunk_id": string("The chunk id."),
            "doc_id": string("The document id."),
            "title": string("The document's title."),
            "contributor": string("The contributor's EVM address."),
            "datanet": string("The datanet."),
            "content_hash": string("keccak-256 of the chunk text."),
            "score": { "type": "number" },
            "snippet": string("The start of the chunk's text."),
            "locator": locator(),
        }),
    )
}

/// A signed usage receipt in its canonical JSON form.
fn receipt() -> Value {
    object(
        &[
            "receiptId",
            "payer",
            "servingNode",
            "modelId",
            "fee",
            "chunks",
            "signature",
        ],
        json!({
            "receiptId": string("The receipt id (EIP-712 hash, 0x-hex)."),
            "payer": string("The payer's address."),
            "servingNode": string("The serving node's address."),
            "modelId": string("The model id (zero for a retrieval)."),
            "fee": string("The fee in wei (decimal)."),
            "chunks": {
                "type": "array",
                "description": "The credited chunks: content hash, contributor, share.",
                "items": object(
                    &["contentHash", "contributor", "weightBps"],
                    json!({
                        "contentHash": { "type": "string" },
                        "contributor": { "type": "string" },
                        "weightBps": { "type": "integer", "minimum": 0, "maximum": 10000 },
                    }),
                ),
            },
            "signature": string("The payer's EIP-712 signature."),
        }),
    )
}

/// The receipt of a result, with `no_receipt` saying why there is none.
fn receipt_properties(properties: &mut Value) {
    properties["receipt"] = nullable(receipt());
    properties["no_receipt"] = nullable(string("Why no receipt was signed, when none was."));
}

/// The `search` tool's result: a `tribute::Retrieval`.
pub fn search_schema() -> Arc<JsonObject> {
    let mut properties = json!({
        "query": string("The query."),
        "hits": { "type": "array", "items": hit(), "description": "The hits, best first." },
        "citations": {
            "type": "array",
            "items": citation(),
            "description": "Each hit's share of the credit (retrieval scores, sum 10000)."
        },
    });
    receipt_properties(&mut properties);
    schema(object(
        &["query", "hits", "citations", "receipt", "no_receipt"],
        properties,
    ))
}

/// The `ask` tool's result: a `tribute::Answer`.
pub fn ask_schema() -> Arc<JsonObject> {
    let sentence = object(
        &["text", "markers", "supported"],
        json!({
            "text": { "type": "string" },
            "markers": { "type": "array", "items": { "type": "integer", "minimum": 1 } },
            "supported": { "type": "boolean" },
        }),
    );
    let usage = object(
        &["prompt_tokens", "answer_tokens"],
        json!({
            "prompt_tokens": { "type": "integer", "minimum": 0 },
            "answer_tokens": { "type": "integer", "minimum": 0 },
            "timings": { "type": "object" },
        }),
    );
    let mut properties = json!({
        "question": string("The question."),
        "text": string("The answer without citation markers."),
        "cited_text": string("The answer with [n] markers after each supported sentence."),
        "citations": { "type": "array", "items": citation() },
        "sentences": { "type": "array", "items": sentence },
        "usage": usage,
    });
    receipt_properties(&mut properties);
    schema(object(
        &[
            "question",
            "text",
            "cited_text",
            "citations",
            "sentences",
            "usage",
            "receipt",
            "no_receipt",
        ],
        properties,
    ))
}

/// The `receipts` tool's result.
pub fn receipts_schema() -> Arc<JsonObject> {
    let count = json!({ "type": "integer", "minimum": 0 });
    let entry = object(
        &["receipt", "state"],
        json!({
            "receipt": receipt(),
            "state": object(&["state"], json!({
                "state": { "enum": ["pending", "batched", "submitted", "confirmed"] },
            })),
        }),
    );
    schema(object(
        &["receipts", "matching", "stats"],
        json!({
            "receipts": { "type": "array", "items": entry, "description": "Most recent last." },
            "matching": { "type": "integer", "minimum": 0, "description": "Receipts matching the filter." },
            "stats": object(
                &["receipts", "pending", "batched", "submitted", "confirmed"],
                json!({
                    "receipts": count, "pending": count, "batched": count,
                    "submitted": count, "confirmed": count,
                }),
            ),
            "note": { "type": "string" },
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subset of JSON Schema the schemas above use (type, required, properties,
    /// items, anyOf, enum, minimum, maximum); the MCP test in bindings/python checks the
    /// same results with the `jsonschema` package. Returns the first violation's path.
    fn violation(schema: &Value, value: &Value, path: &str) -> Option<String> {
        let fail = |why: &str| Some(format!("{path}: {why} ({value})"));
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
            return if options.iter().any(|s| violation(s, value, path).is_none()) {
                None
            } else {
                fail("matches no anyOf branch")
            };
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return fail("not in enum");
        }
        let typed = match schema.get("type").and_then(Value::as_str) {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_u64() || value.is_i64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("null") => value.is_null(),
            Some(other) => return fail(&format!("unknown type {other}")),
        };
        if !typed {
            return fail(&format!("not of type {}", schema["type"]));
        }
        if let Some(n) = value.as_f64() {
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                return fail("below minimum");
            }
            if schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                return fail("above maximum");
            }
        }
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key.as_str().unwrap_or_default();
            if value.get(key).is_none() {
                return fail(&format!("missing {key}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                if let Some(v) = value.get(key)
                    && let Some(v) = violation(sub, v, &format!("{path}.{key}"))
                {
                    return Some(v);
                }
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (i, v) in values.iter().enumerate() {
                if let Some(v) = violation(items, v, &format!("{path}[{i}]")) {
                    return Some(v);
                }
            }
        }
        None
    }

    fn check(schema: &Arc<JsonObject>, value: &Value) -> Option<String> {
        violation(&Value::Object((**schema).clone()), value, "$")
    }

    /// Every `required` key is among the `properties`, at every level.
    fn required_are_declared(schema: &Value, path: &str) {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required {
                let key = key.as_str().expect("required keys are strings");
                assert!(
                    schema["properties"].get(key).is_some(),
                    "{path}: {key} is required but not declared"
                );
            }
        }
        for (key, sub) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            required_are_declared(sub, &format!("{path}.{key}"));
        }
        for sub in schema
            .get("anyOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            required_are_declared(sub, path);
        }
        if let Some(items) = schema.get("items") {
            required_are_declared(items, &format!("{path}[]"));
        }
    }

    fn receipt_json() -> Value {
        json!({
            "adapters": [], "answerHash": "0x2f", "attributionHash": "0x00",
            "chunks": [{ "contentHash": "0xfa", "contributor": "0x5a", "weightBps": 10000 }],
            "fee": "100000000000000", "modelId": "0x00", "nonce": 0, "payer": "0xf3",
            "queryHash": "0x96", "receiptId": "0xaa", "servingNode": "0xf3",
            "signature": "0x36", "timestamp": 1_796_518_570, "version": 2
        })
    }

    fn citation_json() -> Value {
        json!({
            "marker": 1, "weight_bps": 10000, "chunk_id": "zephyr-pricing#0",
            "doc_id": "zephyr-pricing", "title": "Zephyr licensing", "contributor": "0xfB69",
            "datanet": "pilot-notes", "content_hash": "0x3877", "score": 1.0,
            "snippet": "The Zephyr SDK is free for research.",
            "locator": { "char_start": 0, "char_end": 159 }
        })
    }

    #[test]
    fn every_tool_declares_an_object_output_schema() {
        let tools = super::super::TributeServer::tool_router().list_all();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort_unstable();
        assert_eq!(names, ["ask", "receipts", "search"]);
        for tool in &tools {
            let schema = tool
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{}", tool.name));
            assert_eq!(schema.get("type"), Some(&json!("object")), "{}", tool.name);
            required_are_declared(&Value::Object((**schema).clone()), &tool.name);
        }
    }

    #[test]
    fn a_retrieval_validates_against_the_search_schema() {
        let empty = tribute::Retrieval {
            query: "battery".into(),
            hits: vec![],
            citations: vec![],
            receipt: None,
            no_receipt: Some("no payer key".into()),
        };
        let value = serde_json::to_value(&empty).expect("serialises");
        assert_eq!(check(&search_schema(), &value), None);

        let full = json!({
            "query": "How should Zephyr drone batteries be stored?",
            "hits": [{
                "chunk_id": "zephyr-battery#0", "doc_id": "zephyr-battery", "title": "Battery care",
                "text": "Store the cells at 40 percent charge.", "start": 0, "end": 182,
                "contributor": "0x5aAe", "datanet": "zephyr-docs", "content_hash": "0xfaec",
                "locator": { "char_start": 0, "char_end": 182 }, "score": 1.0,
                "bm25": { "score": 3.6, "rank": 1 }, "dense": null
            }],
            "citations": [citation_json()],
            "receipt": receipt_json(),
            "no_receipt": null
        });
        assert_eq!(check(&search_schema(), &full), None);

        let mut bad = full.clone();
        bad["citations"][0]["weight_bps"] = json!(10001);
        assert!(check(&search_schema(), &bad).is_some_and(|v| v.contains("weight_bps")));
        let mut bad = full;
        bad["hits"][0]
            .as_object_mut()
            .expect("object")
            .remove("contributor");
        assert!(check(&search_schema(), &bad).is_some_and(|v| v.contains("contributor")));
    }

    #[test]
    fn answers_and_receipt_lists_validate() {
        let answer = json!({
            "question": "How much does a commercial Zephyr fleet license cost?",
            "retrieval_query": null, "text": "900 euros.", "cited_text": "900 euros. [1]",
            "citations": [citation_json()],
            "sentences": [{
                "text": "900 euros.", "span": { "start": 0, "end": 10 }, "markers": [1],
                "supported": true, "support": 11.9, "unused_markers": [], "uncited_markers": []
            }],
            "citation_audit": null, "adapters": [],
            "usage": { "prompt_tokens": 179, "answer_tokens": 10, "timings": { "total_ms": 1.0 } },
            "receipt": receipt_json(), "no_receipt": null
        });
        assert_eq!(check(&ask_schema(), &answer), None);
        let mut bad = answer;
        bad["receipt"] = json!("0xaa");
        assert!(check(&ask_schema(), &bad).is_some());

        let list = json!({
            "receipts": [{ "receipt": receipt_json(), "state": { "state": "pending" } }],
            "matching": 1,
            "stats": { "receipts": 1, "pending": 1, "batched": 0, "submitted": 0, "confirmed": 0 }
        });
        assert_eq!(check(&receipts_schema(), &list), None);
        let mut bad = list;
        bad["receipts"][0]["state"]["state"] = json!("lost");
        assert!(check(&receipts_schema(), &bad).is_some());
    }
}
