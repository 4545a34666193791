/* validate: a record missing a required field (config "required", default ["id", "amount"])
 * or with a negative "amount" is dropped (null) and reported in "errors"; the rest pass as is. */
#include <stdlib.h>

#include "adf.h"

static json *validate(json *input) {
    static const char *default_required[] = {"id", "amount"};
    json *required = json_get(json_get(input, "config"), "required");
    json *records = json_take(input, "records");
    if (!records) records = json_array();
    json *errors = json_array();
    for (size_t i = 0; i < records->count; i++) {
        json *record = records->items[i];
        adf_text reason = {0};
        size_t nreq = required && required->type == JSON_ARRAY ? required->count : 2;
        for (size_t k = 0; k < nreq && !reason.data; k++) {
            const char *field = required && required->type == JSON_ARRAY ? required->items[k]->string
                                                                          : default_required[k];
            json *value = field ? json_get(record, field) : NULL;
            if (field && (!value || value->type == JSON_NULL)) {
                adf_text_add(&reason, "missing field '");
                adf_text_add(&reason, field);
                adf_text_add(&reason, "'");
            }
        }
        double amount;
        if (!reason.data && json_get_number(record, "amount", &amount) && amount < 0) {
            adf_text_add(&reason, "negative amount ");
            adf_text_number(&reason, amount);
        }
        if (reason.data) {
            json *error = json_object();
            json_set(error, "index", json_number((double)i));
            json_set(error, "error", json_string(reason.data));
            json_push(errors, error);
            json_free(record);
            records->items[i] = json_null();
            free(reason.data);
        }
    }
    if (errors->count > 0) {
        adf_text msg = {0};
        adf_text_add(&msg, "validate: ");
        adf_text_number(&msg, (double)errors->count);
        adf_text_add(&msg, " of ");
        adf_text_number(&msg, (double)records->count);
        adf_text_add(&msg, " records rejected");
        adf_log(2, msg.data);
        free(msg.data);
    }

    json *output = json_object();
    json_set(output, "records", records);
    json_set(output, "errors", errors);
    return output;
}

ADF_EXPORT("run") int64_t run(int32_t ptr, int32_t len) { return adf_handle(ptr, len, validate); }
