// validate: a record missing a required field (config "required", default ["id", "amount"])
// or with a negative "amount" is dropped (null) and reported in "errors"; the rest pass as is.
import { Kind, Value, formatNumber, handle, log, newArray, newNull, newNumber, newObject, newString } from "./adf";
export { alloc, dealloc } from "./adf";

function validate(input: Value): Value {
  let required: string[] = ["id", "amount"];
  const config = input.get("config");
  const list = config != null ? config.get("required") : null;
  if (list != null && list.kind == Kind.Arr) {
    required = [];
    for (let k = 0; k < list.items.length; k++) required.push(list.items[k].s);
  }
  const records = input.take("records");
  const errors = newArray();
  for (let i = 0; i < records.items.length; i++) {
    const record = records.items[i];
    let reason = "";
    for (let k = 0; k < required.length && reason == ""; k++) {
      if (!record.has(required[k])) reason = `missing field '${required[k]}'`;
    }
    if (reason == "" && record.num("amount", 0) < 0) reason = `negative amount ${formatNumber(record.num("amount"))}`;
    if (reason != "") {
      errors.push(newObject().set("index", newNumber(i)).set("error", newString(reason)));
      records.items[i] = newNull();
    }
  }
  if (errors.items.length > 0) {
    log(2, `validate: ${errors.items.length} of ${records.items.length} records rejected`);
  }
  return newObject().set("records", records.isNull ? newArray() : records).set("errors", errors);
}

export function run(ptr: i32, len: i32): i64 {
  return handle(ptr, len, validate);
}
