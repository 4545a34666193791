// route: "next" sends a record to step "big" when amount > threshold (config "threshold",
// default 100), to "small" otherwise, nowhere ([], done) when amount is 0, and on along the
// flow (null) when it has no amount. Records pass unchanged.
import { Value, handle, newArray, newNull, newObject, strings } from "./adf";
export { alloc, dealloc } from "./adf";

function route(input: Value): Value {
  const config = input.get("config");
  const threshold = config != null ? config.num("threshold", 100) : 100;
  const records = input.take("records");
  const next = newArray();
  for (let i = 0; i < records.items.length; i++) {
    const record = records.items[i];
    if (!record.hasNumber("amount")) { next.push(newNull()); continue; }
    const amount = record.num("amount");
    next.push(amount == 0 ? newArray() : amount > threshold ? strings(["big"]) : strings(["small"]));
  }
  return newObject().set("records", records.isNull ? newArray() : records).set("next", next);
}

export function run(ptr: i32, len: i32): i64 {
  return handle(ptr, len, route);
}
