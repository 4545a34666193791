//! validate: a record missing a required field (config `required`, default `["id", "amount"]`)
//! or with a negative `amount` is dropped (null) and reported in `errors`; the rest pass as is.
mod adf;
use adf::Value;

#[no_mangle]
pub extern "C" fn run(ptr: i32, len: i32) -> i64 {
    adf::handle(ptr, len, |mut input| {
        let required: Vec<String> = match input.get("config").and_then(|c| c.get("required")) {
            Some(Value::Arr(fields)) => fields.iter().filter_map(|f| f.as_str().map(String::from)).collect(),
            _ => vec!["id".to_string(), "amount".to_string()],
        };
        let mut records = Vec::new();
        let mut errors = Vec::new();
        for (index, record) in input.take("records").into_array().into_iter().enumerate() {
            let missing = required.iter().find(|f| record.get(f).map_or(true, Value::is_null));
            let problem = match (missing, record.num("amount")) {
                (Some(field), _) => Some(format!("missing field '{}'", field)),
                (None, Some(amount)) if amount < 0.0 => Some(format!("negative amount {}", amount)),
                _ => None,
            };
            match problem {
                Some(reason) => {
                    errors.push(Value::object().with("index", index).with("error", reason));
                    records.push(Value::Null);
                }
                None => records.push(record),
            }
        }
        if !errors.is_empty() {
            adf::warn(&format!("validate: {} of {} records rejected", errors.len(), records.len()));
        }
        Value::object().with("records", records).with("errors", errors)
    })
}
