//! The few JavaScript value semantics lobu's reader relies on, so our projection and stats
//! give the same answers as lobu's TypeScript on the same bytes (odd inputs included).

use serde_json::Value;

/// JavaScript truthiness of a field (`None` is `undefined`).
pub(crate) fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_) | Value::Object(_)) => true,
    }
}

/// What a template literal (`${value}`) makes of a field: lobu builds model names as
/// `${provider}/${modelId}`, which gives `"undefined/undefined"` when both are missing.
pub(crate) fn template(value: Option<&Value>) -> String {
    match value {
        None => "undefined".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        // Array.prototype.toString: elements joined by commas, null and undefined as "".
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::Null => String::new(),
                other => template(Some(other)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_owned(),
    }
}

/// A token count as `a || b || 0` picks it: the first field that is a truthy number.
/// Counts that are not non-negative integers (never written by pi) count as 0.
pub(crate) fn first_count(candidates: [Option<&Value>; 2]) -> u64 {
    candidates
        .into_iter()
        .find(|v| truthy(*v))
        .and_then(|v| v.and_then(Value::as_u64))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_follows_javascript() {
        for falsy in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(Some(&falsy)), "{falsy} should be falsy");
        }
        for t in [json!(true), json!(1), json!("0"), json!([]), json!({})] {
            assert!(truthy(Some(&t)), "{t} should be truthy");
        }
        assert!(!truthy(None));
    }

    #[test]
    fn template_literal_spells_missing_values_like_javascript() {
        assert_eq!(template(None), "undefined");
        assert_eq!(template(Some(&json!(null))), "null");
        assert_eq!(template(Some(&json!("openai"))), "openai");
        assert_eq!(template(Some(&json!(4))), "4");
        assert_eq!(template(Some(&json!(["a", null, 2]))), "a,,2");
        assert_eq!(template(Some(&json!({"a": 1}))), "[object Object]");
    }

    #[test]
    fn zero_count_falls_through_to_the_other_spelling() {
        let (zero, seven) = (json!(0), json!(7));
        assert_eq!(first_count([Some(&zero), Some(&seven)]), 7);
        assert_eq!(first_count([Some(&seven), Some(&zero)]), 7);
        assert_eq!(first_count([None, None]), 0);
        assert_eq!(first_count([Some(&json!("12")), None]), 0);
    }
}
