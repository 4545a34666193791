/* context: numbers records across batches with the host's run context. It reads "seen"
 * (get_context), gives each record "seq" = seen + position, stores the new count
 * (set_context) and returns "last_batch" in the output's "context". */
#include "adf.h"

static json *number_records(json *input) {
    double seen = 0;
    json *got = adf_get_context("seen");
    if (adf_ok(got)) json_get_number(got, "value", &seen);
    else adf_log(2, json_get_string(got, "error"));
    json_free(got);

    json *records = json_take(input, "records");
    if (!records) records = json_array();
    for (size_t i = 0; i < records->count; i++)
        json_set(records->items[i], "seq", json_number(seen + (double)i + 1));

    json *set = adf_set_context("seen", json_number(seen + (double)records->count));
    if (!adf_ok(set)) adf_log(3, json_get_string(set, "error"));
    json_free(set);

    json *context = json_object();
    json_set(context, "last_batch", json_number((double)records->count));
    json *output = json_object();
    json_set(output, "records", records);
    json_set(output, "context", context);
    return output;
}

ADF_EXPORT("run") int64_t run(int32_t ptr, int32_t len) { return adf_handle(ptr, len, number_records); }
