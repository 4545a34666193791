// context: numbers records across batches with the host's run context. It reads "seen"
// (GetContext), gives each record "seq" = seen + position, stores the new count
// (SetContext) and returns "last_batch" in the output's "context".
package main

//go:wasmexport run
func run(ptr, size int32) int64 {
	return handle(ptr, size, func(input *Value) *Value {
		got := GetContext("seen")
		if !OK(got) {
			Log(2, "GetContext: "+got.Text("error"))
		}
		seen, _ := got.Number("value")
		records := input.Take("records")
		for i, record := range records.Items {
			record.Set("seq", NewNumber(seen+float64(i)+1))
		}
		count := float64(len(records.Items))
		if set := SetContext("seen", NewNumber(seen+count)); !OK(set) {
			Log(3, "SetContext: "+set.Text("error"))
		}
		return NewObject().
			Set("records", NewArray(records.Items...)).
			Set("context", NewObject().Set("last_batch", NewNumber(count)))
	})
}
