// validate: a record missing a required field (config "required", default ["id", "amount"])
// or with a negative "amount" is dropped (null) and reported in "errors"; the rest pass as is.
package main

import "strconv"

//go:wasmexport run
func run(ptr, size int32) int64 {
	return handle(ptr, size, func(input *Value) *Value {
		required := []string{"id", "amount"}
		if list := input.Get("config").Get("required"); list != nil && list.Kind == KindArray {
			required = required[:0]
			for _, field := range list.Items {
				required = append(required, field.Str)
			}
		}
		records := input.Take("records")
		errors := NewArray()
		for i, record := range records.Items {
			reason := ""
			for _, field := range required {
				if reason == "" && !record.Has(field) {
					reason = "missing field '" + field + "'"
				}
			}
			if amount, ok := record.Number("amount"); reason == "" && ok && amount < 0 {
				reason = "negative amount " + FormatNumber(amount)
			}
			if reason != "" {
				errors.Push(NewObject().Set("index", NewNumber(float64(i))).Set("error", NewString(reason)))
				records.Items[i] = NewNull()
			}
		}
		if len(errors.Items) > 0 {
			Log(2, "validate: "+strconv.Itoa(len(errors.Items))+" of "+strconv.Itoa(len(records.Items))+
				" records rejected")
		}
		return NewObject().Set("records", NewArray(records.Items...)).Set("errors", errors)
	})
}
