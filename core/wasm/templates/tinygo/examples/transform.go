// transform: every record that has numeric "price" and "qty" gets "total" = price * qty.
package main

import "strconv"

//go:wasmexport run
func run(ptr, size int32) int64 {
	return handle(ptr, size, func(input *Value) *Value {
		records := input.Take("records")
		priced := 0
		for _, record := range records.Items {
			price, ok1 := record.Number("price")
			qty, ok2 := record.Number("qty")
			if ok1 && ok2 {
				record.Set("total", NewNumber(price*qty))
				priced++
			}
		}
		Log(1, "transform: priced "+strconv.Itoa(priced)+" of "+strconv.Itoa(len(records.Items))+" records")
		return NewObject().Set("records", NewArray(records.Items...))
	})
}
