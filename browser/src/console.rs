//! Console lines ("level: text") from CDP events, and the text of a thrown
//! exception.

use serde_json::Value;

/// The console line for a `Runtime.consoleAPICalled`,
/// `Runtime.exceptionThrown` or `Log.entryAdded` event; `None` for other
/// events.
pub(crate) fn line(method: &str, params: &Value) -> Option<String> {
    match method {
        "Runtime.consoleAPICalled" => {
            let level = params["type"].as_str().unwrap_or("log");
            let args = params["args"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let text: Vec<String> = args.iter().map(remote_object).collect();
            Some(format!("{level}: {}", text.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!(
            "exception: {}",
            exception_text(&params["exceptionDetails"])
        )),
        "Log.entryAdded" => {
            let entry = &params["entry"];
            let level = entry["level"].as_str().unwrap_or("info");
            let text = entry["text"].as_str().unwrap_or_default();
            match entry["url"].as_str().filter(|url| !url.is_empty()) {
                Some(url) => Some(format!("{level}: {text} ({url})")),
                None => Some(format!("{level}: {text}")),
            }
        }
        "Inspector.targetCrashed" => Some("error: the page crashed".to_owned()),
        _ => None,
    }
}

/// What a `Runtime.ExceptionDetails` says was thrown: the exception's
/// description (an `Error`'s message and stack), else the thrown value, else
/// Chromium's summary ("Uncaught").
pub(crate) fn exception_text(details: &Value) -> String {
    let exception = &details["exception"];
    let summary = details["text"].as_str().unwrap_or("exception");
    if let Some(description) = exception["description"].as_str() {
        return description.to_owned();
    }
    match exception.get("value") {
        Some(value) => format!("{summary} {}", plain(value)),
        None => summary.to_owned(),
    }
}

/// A console argument as the console shows it: strings bare, other values
/// as JSON, objects by their description.
fn remote_object(object: &Value) -> String {
    if let Some(value) = object.get("value") {
        return plain(value);
    }
    for key in ["unserializableValue", "description", "type"] {
        if let Some(text) = object[key].as_str() {
            return text.to_owned();
        }
    }
    String::new()
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn console_calls_join_their_arguments() {
        let params = json!({"type": "warning", "args": [
            {"type": "string", "value": "count"},
            {"type": "number", "value": 3},
            {"type": "number", "unserializableValue": "NaN"},
            {"type": "object", "className": "HTMLDivElement", "description": "div#x"},
            {"type": "undefined"},
        ]});
        assert_eq!(
            line("Runtime.consoleAPICalled", &params).unwrap(),
            "warning: count 3 NaN div#x undefined"
        );
    }

    #[test]
    fn exceptions_show_the_error_or_the_thrown_value() {
        let error = json!({"exceptionDetails": {"text": "Uncaught", "exception": {
            "type": "object", "className": "Error", "description": "Error: boom\n    at f (x.js:1:1)"
        }}});
        assert_eq!(
            line("Runtime.exceptionThrown", &error).unwrap(),
            "exception: Error: boom\n    at f (x.js:1:1)"
        );
        let thrown = json!({"text": "Uncaught", "exception": {"type": "string", "value": "plain"}});
        assert_eq!(exception_text(&thrown), "Uncaught plain");
        assert_eq!(exception_text(&json!({"text": "Uncaught"})), "Uncaught");
    }

    #[test]
    fn log_entries_name_their_url() {
        let entry = json!({"entry": {"source": "network", "level": "error",
            "text": "Failed to load resource: 404", "url": "http://127.0.0.1:1/x.js"}});
        assert_eq!(
            line("Log.entryAdded", &entry).unwrap(),
            "error: Failed to load resource: 404 (http://127.0.0.1:1/x.js)"
        );
        assert_eq!(line("Page.loadEventFired", &json!({})), None);
    }
}
