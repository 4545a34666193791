//! transform: every record that has numeric `price` and `qty` gets `total = price * qty`.
mod adf;
use adf::Value;

#[no_mangle]
pub extern "C" fn run(ptr: i32, len: i32) -> i64 {
    adf::handle(ptr, len, |mut input| {
        let mut records = input.take("records").into_array();
        let mut priced = 0;
        for record in records.iter_mut() {
            if let (Some(price), Some(qty)) = (record.num("price"), record.num("qty")) {
                record.set("total", price * qty);
                priced += 1;
            }
        }
        adf::info(&format!("transform: priced {} of {} records", priced, records.len()));
        Value::object().with("records", records)
    })
}
