// route: "next" sends a record to step "big" when amount > threshold (config "threshold",
// default 100), to "small" otherwise, nowhere ([], done) when amount is 0, and on along the
// flow (null) when it has no amount. Records pass unchanged.
package main

//go:wasmexport run
func run(ptr, size int32) int64 {
	return handle(ptr, size, func(input *Value) *Value {
		threshold, ok := input.Get("config").Number("threshold")
		if !ok {
			threshold = 100
		}
		records := input.Take("records")
		next := NewArray()
		for _, record := range records.Items {
			amount, ok := record.Number("amount")
			switch {
			case !ok:
				next.Push(NewNull())
			case amount == 0:
				next.Push(NewArray())
			case amount > threshold:
				next.Push(Strings("big"))
			default:
				next.Push(Strings("small"))
			}
		}
		return NewObject().Set("records", NewArray(records.Items...)).Set("next", next)
	})
}
