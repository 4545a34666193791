//! route: `next` sends a record to step "big" when amount > threshold (config `threshold`,
//! default 100), to "small" otherwise, nowhere (`[]`, done) when amount is 0, and on along
//! the flow (null) when it has no amount. Records pass unchanged.
mod adf;
use adf::Value;

#[no_mangle]
pub extern "C" fn run(ptr: i32, len: i32) -> i64 {
    adf::handle(ptr, len, |mut input| {
        let threshold = input.get("config").and_then(|c| c.num("threshold")).unwrap_or(100.0);
        let records = input.take("records").into_array();
        let next: Vec<Value> = records
            .iter()
            .map(|record| match record.num("amount") {
                Some(amount) if amount == 0.0 => Value::Arr(vec![]),
                Some(amount) if amount > threshold => vec!["big"].into(),
                Some(_) => vec!["small"].into(),
                None => Value::Null,
            })
            .collect();
        Value::object().with("records", records).with("next", next)
    })
}
