//! JSON values as Cedar values.

use cedar_policy::RestrictedExpression;
use serde_json::Value;

/// A JSON value as a Cedar expression: strings, booleans, integers (i64),
/// arrays as sets, objects as records. `None` for `null`, non-integral
/// numbers, and containers holding them (Cedar has neither).
pub fn expression(v: &Value) -> Option<RestrictedExpression> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(expression).collect::<Option<Vec<_>>>()?)
        }
        Value::Object(m) => {
            let fields = m
                .iter()
                .map(|(k, v)| expression(v).map(|x| (k.clone(), x)))
                .collect::<Option<Vec<_>>>()?;
            RestrictedExpression::new_record(fields).ok()?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::expression;
    use serde_json::json;

    #[test]
    fn json_maps_onto_cedar_values_and_null_does_not() {
        assert!(expression(&json!({"a": [1, "x", true], "b": {"c": 2}})).is_some());
        assert!(expression(&json!(null)).is_none());
        assert!(expression(&json!(1.5)).is_none());
        assert!(expression(&json!([1, null])).is_none());
    }
}
