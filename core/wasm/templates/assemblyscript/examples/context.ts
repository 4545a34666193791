// context: numbers records across batches with the host's run context. It reads "seen"
// (getContext), gives each record "seq" = seen + position, stores the new count
// (setContext) and returns "last_batch" in the output's "context".
import { Value, getContext, handle, isOk, log, newArray, newNumber, newObject, setContext } from "./adf";
export { alloc, dealloc } from "./adf";

function numberRecords(input: Value): Value {
  const got = getContext("seen");
  if (!isOk(got)) log(2, "getContext: " + got.get("error")!.s);
  const seen = got.num("value", 0);
  const records = input.take("records");
  for (let i = 0; i < records.items.length; i++) {
    records.items[i].set("seq", newNumber(seen + i + 1));
  }
  const count = records.items.length;
  const set = setContext("seen", newNumber(seen + count));
  if (!isOk(set)) log(3, "setContext: " + set.get("error")!.s);
  return newObject()
    .set("records", records.isNull ? newArray() : records)
    .set("context", newObject().set("last_batch", newNumber(count)));
}

export function run(ptr: i32, len: i32): i64 {
  return handle(ptr, len, numberRecords);
}
