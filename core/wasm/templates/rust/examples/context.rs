//! context: numbers records across batches with the host's run context. It reads `seen`
//! (get_context), gives each record `seq = seen + position`, stores the new count
//! (set_context) and returns `last_batch` in the output's `context`.
mod adf;
use adf::Value;

#[no_mangle]
pub extern "C" fn run(ptr: i32, len: i32) -> i64 {
    adf::handle(ptr, len, |mut input| {
        let seen = match adf::get_context("seen") {
            Ok(value) => value.as_f64().unwrap_or(0.0),
            Err(e) => { adf::warn(&format!("get_context: {}", e)); 0.0 }
        };
        let mut records = input.take("records").into_array();
        for (i, record) in records.iter_mut().enumerate() {
            record.set("seq", seen + i as f64 + 1.0);
        }
        let count = records.len();
        if let Err(e) = adf::set_context("seen", (seen + count as f64).into()) {
            adf::error(&format!("set_context: {}", e));
        }
        Value::object().with("records", records).with("context", Value::object().with("last_batch", count))
    })
}
