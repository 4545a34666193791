// transform: every record that has numeric "price" and "qty" gets "total" = price * qty.
import { Value, handle, log, newArray, newNumber, newObject } from "./adf";
export { alloc, dealloc } from "./adf";

function transform(input: Value): Value {
  const records = input.take("records");
  let priced = 0;
  for (let i = 0; i < records.items.length; i++) {
    const record = records.items[i];
    if (record.hasNumber("price") && record.hasNumber("qty")) {
      record.set("total", newNumber(record.num("price") * record.num("qty")));
      priced++;
    }
  }
  log(1, `transform: priced ${priced} of ${records.items.length} records`);
  return newObject().set("records", records.isNull ? newArray() : records);
}

export function run(ptr: i32, len: i32): i64 {
  return handle(ptr, len, transform);
}
