/* route: "next" sends a record to step "big" when amount > threshold (config "threshold",
 * default 100), to "small" otherwise, nowhere ([], done) when amount is 0, and on along the
 * flow (null) when it has no amount. Records pass unchanged. */
#include "adf.h"

static json *route(json *input) {
    double threshold = 100;
    json_get_number(json_get(input, "config"), "threshold", &threshold);
    json *records = json_take(input, "records");
    if (!records) records = json_array();
    json *next = json_array();
    for (size_t i = 0; i < records->count; i++) {
        double amount;
        json *targets;
        if (!json_get_number(records->items[i], "amount", &amount)) {
            targets = json_null();
        } else {
            targets = json_array();
            if (amount > threshold) json_push(targets, json_string("big"));
            else if (amount != 0) json_push(targets, json_string("small"));
        }
        json_push(next, targets);
    }
    json *output = json_object();
    json_set(output, "records", records);
    json_set(output, "next", next);
    return output;
}

ADF_EXPORT("run") int64_t run(int32_t ptr, int32_t len) { return adf_handle(ptr, len, route); }
